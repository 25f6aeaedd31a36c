"""An in-memory stand-in for ``modelrelease.adapters.kubernetes.Cluster``, for fast runtime tests.

Objects are plain dicts keyed by (kind, namespace, name). Like the API server it stamps uid,
resourceVersion and generation, answers a create of an existing name with the existing object (the
adapter's 409 adoption), applies RFC 7386 merge patches, and rejects a status patch whose
resourceVersion is stale. Every call the operator makes is recorded, so tests can count writes.

Test-side helpers (``put``, ``set_status``, ``get``) play the other controllers and are not recorded.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from modelrelease import api
from modelrelease.adapters.kubernetes import Cluster, Conflict

RELEASE_LABEL = "modelrelease.io/release"
WRITES = frozenset({"create", "merge_patch", "delete", "patch_release_status"})
Key = tuple[str, str, str]


class NotFound(Exception):
    """A write to an object that does not exist (HTTP 404)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes a key, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class Call:
    verb: str
    kind: str
    namespace: str
    name: str
    body: Any = None
    adopted: bool = False
    """A create that found the object already there (a 409 turned into adoption)."""

    @property
    def is_write(self) -> bool:
        return self.verb in WRITES and not self.adopted


@dataclass
class FakeCluster:
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    unlisted: set[Key] = field(default_factory=set)
    """Objects that exist but that list_owned does not return yet (a watch cache lagging behind)."""
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _interleave: set[tuple[str, str]] = field(default_factory=set)

    # The Cluster protocol.

    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(Call("get_release", api.KIND, namespace, name))
        obj = self.objects.get((api.KIND, namespace, name))
        answer = copy.deepcopy(obj) if obj is not None else None
        if obj is not None and (namespace, name) in self._interleave:
            self._interleave.discard((namespace, name))
            self._touch(obj)  # someone else wrote right after this read
        return answer

    def list_owned(self, kind: str, namespace: str, release: str) -> list[dict[str, Any]]:
        self.calls.append(Call("list_owned", kind, namespace, release))
        return [
            copy.deepcopy(obj)
            for (k, ns, name), obj in sorted(self.objects.items())
            if k == kind and ns == namespace and (k, ns, name) not in self.unlisted
            and (obj["metadata"].get("labels") or {}).get(RELEASE_LABEL) == release
        ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = self._key(obj)
        existing = self.objects.get(key)
        self.calls.append(Call("create", *key, body=copy.deepcopy(obj), adopted=existing is not None))
        if existing is not None:
            return copy.deepcopy(existing)
        return copy.deepcopy(self._store(copy.deepcopy(obj)))

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(Call("merge_patch", kind, namespace, name, body=copy.deepcopy(patch)))
        obj = self._existing(kind, namespace, name)
        patched = merge_patch(obj, patch)
        if patched.get("spec") != obj.get("spec"):
            patched["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self._touch(patched)
        self.objects[(kind, namespace, name)] = patched
        return copy.deepcopy(patched)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(Call("delete", kind, namespace, name))
        self.objects.pop((kind, namespace, name), None)  # a 404 is fine, as in the adapter

    def patch_release_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(Call("patch_release_status", api.KIND, namespace, name, body=copy.deepcopy(status)))
        obj = self._existing(api.KIND, namespace, name)
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"{namespace}/{name} changed since it was read")
        # The status subresource: only status changes, and generation does not move.
        obj["status"] = merge_patch(obj.get("status"), status)
        self._touch(obj)
        return copy.deepcopy(obj)

    # Test-side helpers: the user, the other controllers, and what the tests inspect.

    def add_release(self, name: str, spec: Any, namespace: str = "ml",
                    status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {"apiVersion": api.API_VERSION, "kind": api.KIND,
                               "metadata": {"name": name, "namespace": namespace, **metadata}, "spec": spec}
        if status is not None:
            obj["status"] = status
        return self.put(obj)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object as another client would (not recorded as an operator call)."""
        return copy.deepcopy(self._store(copy.deepcopy(obj)))

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace an object's status, as its controller would."""
        obj = self._existing(kind, namespace, name)
        obj["status"] = copy.deepcopy(status)
        self._touch(obj)

    def update_spec(self, kind: str, namespace: str, name: str, spec: Any) -> None:
        """Replace an object's spec, as a user would (generation moves)."""
        obj = self._existing(kind, namespace, name)
        obj["spec"] = copy.deepcopy(spec)
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        self._touch(obj)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def names(self, kind: str, namespace: str = "ml") -> list[str]:
        return sorted(n for (k, ns, n) in self.objects if k == kind and ns == namespace)

    def write_after_next_read(self, namespace: str, name: str) -> None:
        """Another writer changes the release right after the operator's next read of it."""
        self._interleave.add((namespace, name))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.is_write]

    def mark(self) -> int:
        """A position in the call log, for ``since``."""
        return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        return self.calls[mark:]

    # Internals.

    def _key(self, obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return obj["kind"], meta["namespace"], meta["name"]

    def _existing(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            raise NotFound(f"{kind} {namespace}/{name} not found")
        return obj

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        previous = self.objects.get(self._key(obj))
        meta.setdefault("uid", previous["metadata"]["uid"] if previous else f"uid-{next(self._counter)}")
        meta.setdefault("generation", 1)
        self._touch(obj)
        self.objects[self._key(obj)] = obj
        return obj

    def _touch(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._counter))


def _is_a_cluster(fake: FakeCluster) -> Cluster:
    return fake  # mypy checks that the fake keeps up with the Protocol
