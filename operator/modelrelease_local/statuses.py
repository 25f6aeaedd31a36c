"""
Status writing shared by the emulated controllers: conditions that keep their lastTransitionTime,
counters omitted at zero (as the API's omitempty fields are), and status writes that tolerate the
object having been deleted meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrelease_local import errors, timestamps
from modelrelease_local.resources import ApiResource
from modelrelease_local.store import ObjectStore

__all__ = ["conditions", "current_status", "object_key", "without_zeros", "write_status"]

Object = dict[str, Any]
Key = tuple[str, str]


def object_key(obj: Mapping[str, Any]) -> Key:
    return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])


def conditions(old: list[Object] | None, new: list[tuple[str, str, str, str]], *, job: bool) -> list[Object]:
    """Build conditions; the ones whose status did not change keep their lastTransitionTime."""
    now = timestamps.now()
    previous = {condition.get("type"): condition for condition in old or []}
    result = []
    for kind, status, reason, message in new:
        before = previous.get(kind)
        changed = before is None or before.get("status") != status
        condition = {"type": kind, "status": status, "reason": reason, "message": message,
                     "lastTransitionTime": now if changed else before.get("lastTransitionTime", now)}  # type: ignore[union-attr]
        condition["lastProbeTime" if job else "lastUpdateTime"] = now
        result.append(condition)
    return result


def without_zeros(status: Object, *names: str) -> Object:
    return {key: value for key, value in status.items() if not (key in names and not value)}


def write_status(store: ObjectStore, resource: ApiResource, obj: Mapping[str, Any], status: Object) -> bool:
    """Replace an object's status; False if the object is gone (deleted meanwhile)."""
    namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
    try:
        store.replace(resource, namespace, name, {"status": status}, subresource="status")
    except errors.ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def current_status(store: ObjectStore, resource: ApiResource, obj: Mapping[str, Any]) -> Object | None:
    found = store.find(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])
    if found is None or found["metadata"]["uid"] != obj["metadata"]["uid"]:
        return None
    return dict(found.get("status") or {})
