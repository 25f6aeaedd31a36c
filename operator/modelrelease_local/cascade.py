"""
What follows a deletion in the object store, as the API server and its garbage collector do it:
dependents deleted (or orphaned) once all their owners are gone, a namespace's objects deleted with
it, and a CRD's resources (and all its custom objects) unregistered with it.

A mixin of :class:`~.store.ObjectStore`: it works on the store's own maps and writes through the
store's ``_commit`` and ``delete``, so every change it makes is stamped, persisted and watched.
"""
from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelrelease_local.resources import ApiResource, ResourceRegistry, StorageKey, resources_from_crd
from modelrelease_local.watching import EventLog, StoreEvent

__all__ = ["DeletionCascade"]

Object = dict[str, Any]
ObjectKey = tuple[str | None, str]
NAMESPACES: StorageKey = ("", "namespaces")


class DeletionCascade:
    registry: ResourceRegistry
    events: EventLog
    _objects: dict[StorageKey, dict[ObjectKey, Object]]
    _uids: dict[str, tuple[StorageKey, ObjectKey]]

    if TYPE_CHECKING:
        def delete(self, resource: ApiResource, namespace: str | None, name: str,
                   options: Any = None, *, dry_run: bool = False) -> Object: ...

        def _commit(self, resource: ApiResource, key: ObjectKey, old: Object | None, new: Object, *,
                    deleting: bool = False) -> Object: ...

    def _after_delete(self, resource: ApiResource, obj: Object, *, orphan: bool) -> None:
        uid = obj["metadata"]["uid"]
        if resource.storage == NAMESPACES:
            self._empty_namespace(obj["metadata"]["name"])
        self._schedule(lambda: self._collect_dependents(uid, orphan=orphan))

    def _sync_crd(self, crd: Object, *, removed: bool) -> None:
        crd_name = crd["metadata"]["name"]
        old_storages = {res.storage for res in self.registry if res.crd_name == crd_name}
        if removed:
            self.registry.remove_crd(crd_name)
            for storage in old_storages:  # the real server deletes all custom objects with their CRD
                for (namespace, name) in list(self._objects.get(storage, {})):
                    self._force_remove(storage, namespace, name)
        else:
            self.registry.replace_crd(crd_name, resources_from_crd(crd))

    def _force_remove(self, storage: StorageKey, namespace: str | None, name: str) -> None:
        obj = self._objects.get(storage, {}).pop((namespace, name), None)
        if obj is not None:
            self._uids.pop(obj["metadata"]["uid"], None)
            self.events.publish(StoreEvent("DELETED", storage, namespace, obj, obj, self.events.next_rv()))

    def _empty_namespace(self, namespace: str) -> None:
        for storage, bucket in list(self._objects.items()):
            resource = self.registry.preferred(storage)
            for (obj_namespace, name) in list(bucket):
                if resource is not None and obj_namespace == namespace and (obj_namespace, name) in bucket:
                    self.delete(resource, namespace, name)

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """The garbage collector: delete (or orphan) the objects whose owners are all gone."""
        for storage, bucket in list(self._objects.items()):
            resource = self.registry.preferred(storage)
            if resource is None:
                continue
            for key, obj in list(bucket.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid and ref.get("uid") in self._uids]
                if remaining or orphan:
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != owner_uid]
                    if not new["metadata"]["ownerReferences"]:
                        del new["metadata"]["ownerReferences"]
                    self._commit(resource, key, obj, new)
                elif key in bucket:
                    self.delete(resource, key[0], key[1])

    @staticmethod
    def _schedule(callback: Callable[[], None]) -> None:
        # Dependents are collected after the owner's deletion is answered, as the real GC does.
        try:
            asyncio.get_running_loop().call_soon(callback)
        except RuntimeError:
            callback()
