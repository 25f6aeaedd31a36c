"""The ``autoscaling/v1 Scale`` view of a workload: what the ``/scale`` subresource reads and writes."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrelease_local.resources import ApiResource

__all__ = ["scale_view"]


def scale_view(resource: ApiResource, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The Scale object of a stored workload: its spec and observed replicas and its label selector."""
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if key in meta},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": ",".join(f"{key}={value}" for key, value in selector.items())},
    }
