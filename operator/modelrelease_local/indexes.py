"""
Completion indexes of Indexed Jobs, as Kubernetes 1.32 writes and reads them
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode).

Each Pod of an Indexed Job carries its index in the annotation and (PodIndexLabel, GA in 1.32) the
label ``batch.kubernetes.io/job-completion-index``; the Job controller reads it from the annotation.
``status.completedIndexes`` lists the succeeded indexes in increasing order, separated by commas,
with three or more consecutive numbers compressed to ``first-last``: 1, 3, 4, 5 and 7 are
``"1,3-5,7"``, and two neighbours stay apart (0 and 1 are ``"0,1"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["COMPLETION_INDEX", "completion_index", "format_indexes", "is_indexed"]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def is_indexed(job: Mapping[str, Any]) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def completion_index(pod: Mapping[str, Any]) -> int | None:
    """The Pod's completion index, from its annotation as the Job controller reads it (None: not indexed)."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX)
    if value is None or not str(value).isdigit():  # a negative or malformed index is no index
        return None
    return int(value)


def format_indexes(indexes: Iterable[int]) -> str:
    """``status.completedIndexes`` of these indexes ("" for none)."""
    runs: list[list[int]] = []
    for index in sorted(set(indexes)):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    parts = []
    for first, last in runs:
        if last == first:
            parts.append(str(first))
        elif last == first + 1:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}")
    return ",".join(parts)
