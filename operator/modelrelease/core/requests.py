"""One-shot requests from both places a person may put them: spec.actions (declarative, from Git) and
the release's annotations (the kubectl plugin, Argo CD actions), which Git never holds.

A request is an action kind and a request id. An id fires at most once in a release's life: every
id handled is recorded in status.handledRequests (the most recent ``KEPT_REQUESTS``), whatever order
ids arrive in, so Git restoring an old id (self-heal) is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from modelrelease.api.labels import ANNOTATION_PAUSED, ANNOTATION_REQUESTS, ANNOTATION_UNDO_TO
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ActionKind, HandledRequest, ModelReleaseStatus

Source = Literal["spec", "annotation"]
ORDER: tuple[ActionKind, ...] = ("abort", "undo", "retry", "promote_full", "promote")
"""When several arrive at once, stopping wins over moving forward."""
KEPT_REQUESTS = 100
"""Handled request ids remembered per release; an id older than this many requests could fire again."""


@dataclass(frozen=True)
class Request:
    kind: ActionKind
    id: str
    source: Source
    to_version: str | None = None
    """For undo: the version to restore."""

    @property
    def label(self) -> str:
        return self.kind.replace("_f", "F")


def requests_of(spec: ModelReleaseSpec, annotations: Mapping[str, str]) -> list[Request]:
    """Every request present now, in the order they are handled (spec before annotation per kind)."""
    found: list[Request] = []
    actions = spec.actions
    for kind in ORDER:
        if kind == "undo":
            if actions.undo is not None:
                found.append(Request("undo", actions.undo.request_id, "spec", actions.undo.to_version))
        elif getattr(actions, kind) is not None:
            found.append(Request(kind, getattr(actions, kind), "spec"))
        annotated = (annotations.get(ANNOTATION_REQUESTS[kind]) or "").strip()
        if annotated:
            to_version = (annotations.get(ANNOTATION_UNDO_TO) or "").strip() or None if kind == "undo" else None
            found.append(Request(kind, annotated[:128], "annotation", to_version))
    return found


def was_handled(status: ModelReleaseStatus, request: Request) -> bool:
    if any(r.action == request.kind and r.id == request.id for r in status.handled_requests):
        return True
    # Status written before handledRequests existed knows only the last id of each kind.
    return getattr(status.handled_actions, request.kind) == request.id


def record(status: ModelReleaseStatus, request: Request, outcome: Literal["Handled", "Ignored"], message: str,
           at: str) -> dict[str, object]:
    """The status fields that remember a request: the bounded list and the last id per kind."""
    entry = HandledRequest(id=request.id, action=request.kind, source=request.source, outcome=outcome,
                           message=message, at=at)
    return {
        "handled_requests": [*status.handled_requests, entry][-KEPT_REQUESTS:],
        "handled_actions": status.handled_actions.model_copy(update={request.kind: request.id}),
    }


def held_by_annotation(annotations: Mapping[str, str]) -> bool:
    """The plugin's and Argo CD's pause: like spec.paused, without a spec change."""
    return (annotations.get(ANNOTATION_PAUSED) or "").strip().lower() == "true"
