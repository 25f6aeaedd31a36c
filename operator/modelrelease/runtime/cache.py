"""Reads from the operator's watch caches, writes to the API.

kopf watches the release and the kinds it owns (one stream per kind for the whole operator) and keeps
in-memory indexes of the children by release; a pass reads a snapshot of them, so a settled release
costs the API server nothing. Only what the observers read is kept of each child.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from modelrelease.adapters.kubernetes import Cluster
from modelrelease.api.status import ModelReleaseStatus
from modelrelease.runtime.reconcile import PassResult, status_wire

Object = dict[str, Any]
ReleaseKey = tuple[str, str]
"""(namespace, release name)."""


def _pick(source: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    return {key: copy.deepcopy(source[key]) for key in keys if source and source.get(key) is not None}


def trim(kind: str, body: Mapping[str, Any]) -> Object:
    """The part of a child object the observers read (keeps the indexes small at thousands of releases)."""
    meta = body.get("metadata") or {}
    if kind == "Job":
        # namespace and uid: a multi-worker Job's headless Service is owned by it (runtime.execute).
        return {"metadata": _pick(meta, "name", "namespace", "uid", "labels"),
                "status": copy.deepcopy(body.get("status") or {})}
    if kind == "Pod":
        status = body.get("status") or {}
        return {"metadata": _pick(meta, "name", "labels", "creationTimestamp"),
                "status": _pick(status, "containerStatuses")}
    if kind == "Deployment":
        spec = body.get("spec") or {}
        template = {"metadata": _pick((spec.get("template") or {}).get("metadata"), "annotations")}
        return {"metadata": _pick(meta, "name", "labels", "annotations", "generation"),
                "spec": {**_pick(spec, "replicas"), "template": template},
                "status": copy.deepcopy(body.get("status") or {})}
    return {"metadata": _pick(meta, "name")}


class CachedCluster:
    """A ``Cluster`` whose reads are a snapshot of the watch caches for one release."""

    def __init__(self, writer: Cluster, release: Object, children: Mapping[str, Iterable[Object]]) -> None:
        self.writer = writer
        self.release = release
        self.children = {kind: [copy.deepcopy(o) for o in objects] for kind, objects in children.items()}

    def get_release(self, namespace: str, name: str) -> Object | None:
        return self.release

    def list_owned(self, kind: str, namespace: str, release: str) -> list[Object]:
        return list(self.children.get(kind, ()))

    def create(self, obj: Object) -> Object:
        return self.writer.create(obj)

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Object) -> Object:
        return self.writer.merge_patch(kind, namespace, name, patch)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.writer.delete(kind, namespace, name)

    def patch_release_status(self, namespace: str, name: str, resource_version: str, status: Object) -> Object:
        return self.writer.patch_release_status(namespace, name, resource_version, status)

    # The HTTPRoute is read from the API, not a watch cache: the operator watches httproutes nowhere (it
    # may hold no right to, without traffic routing), and a pass must see the route as it is now.
    def get_http_route(self, namespace: str, name: str) -> Object | None:
        return self.writer.get_http_route(namespace, name)

    def replace_http_route(self, namespace: str, name: str, obj: Object) -> Object:
        return self.writer.replace_http_route(namespace, name, obj)


class Freshest:
    """The newest known state of one release, for the next pass to plan from:

    - right after our own status patch, what the patch returned, while the watch cache still holds
      the version it replaced (planning from that would only repeat the pass and lose a 409);
    - after a pass that kept routine analysis runs in memory (core.analysis.routine_run_only), that
      status, as long as nobody else has changed the release since.
    Otherwise the watch cache.
    """

    def __init__(self) -> None:
        self._replaced_version: str | None = None
        self._written: Object | None = None
        self._base_version: str | None = None
        self._deferred: dict[str, Any] | None = None
        self._stored: ModelReleaseStatus | None = None

    def remember(self, read: Object, result: PassResult) -> None:
        version = read["metadata"].get("resourceVersion")
        if result.written is not None:
            self._replaced_version, self._written = version, result.written
            self._deferred = self._stored = self._base_version = None
        elif result.deferred and result.status is not None:
            if self._deferred is None or self._base_version != version:
                self._stored = result.previous
            self._base_version, self._deferred = version, status_wire(result.status)

    def pick(self, cached: Object) -> tuple[Object, ModelReleaseStatus | None]:
        """The release to plan from, and (when its status is one kept in memory) the status stored."""
        version = cached["metadata"].get("resourceVersion")
        if self._written is not None and version == self._replaced_version:
            return copy.deepcopy(self._written), None
        self._written = self._replaced_version = None
        if self._deferred is not None and version == self._base_version:
            return {**cached, "status": copy.deepcopy(self._deferred)}, self._stored
        self._deferred = self._stored = self._base_version = None
        return cached, None
