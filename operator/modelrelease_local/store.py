"""
The object store of the embedded API server: the Kubernetes write semantics over plain dicts.

All operations are synchronous and run on the server's event loop, so each one is atomic with
respect to the others (no locks needed). Every committed change gets the next value of a global
``resourceVersion`` counter and is fanned out to the watchers (see :mod:`.watching`).

Semantics kept: uid/creationTimestamp/generation stamping; generation bumps on changes outside
metadata and status; optimistic concurrency (409 on a stale resourceVersion); status subresource
isolation; finalizers and deletionTimestamp; garbage collection by ownerReferences and namespace
cleanup (in :mod:`.cascade`); dry runs; CRDs (un)registering their resources; no-op writes not bumping
anything; the structural schema and CEL rules of custom resources (:mod:`.admission`); persistence.
"""
from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from modelrelease_local import admission, errors, patching, timestamps
from modelrelease_local.cascade import DeletionCascade
from modelrelease_local.patching import PatchType
from modelrelease_local.persistence import ApiPersistence, LoadedState
from modelrelease_local.resources import ApiResource, ResourceRegistry, StorageKey
from modelrelease_local.scale import scale_view
from modelrelease_local.schema import FieldValidation
from modelrelease_local.selectors import FieldSelector, LabelSelector
from modelrelease_local.watching import EventLog, StoreEvent, Watcher

__all__ = ["ObjectStore", "PatchType"]
Object = dict[str, Any]
ObjectKey = tuple[str | None, str]  # (namespace, name)


_CRDS: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")
_NAMESPACES: StorageKey = ("", "namespaces")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as the real generateName: no vowels, no look-alikes


def _content(obj: Mapping[str, Any], resource: ApiResource) -> dict[str, Any]:
    """The part of an object whose changes bump the generation."""
    # A custom resource without a status subresource counts its status as content, as the real server does.
    status_is_content = resource.custom and not resource.has_status
    excluded = {"metadata", "apiVersion", "kind"} | (set() if status_is_content else {"status"})
    return {key: value for key, value in obj.items() if key not in excluded}


def _without_rv(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {key: value for key, value in (obj.get("metadata") or {}).items() if key != "resourceVersion"}
    return {**obj, "metadata": meta}


class ObjectStore(DeletionCascade):

    def __init__(self, registry: ResourceRegistry, *, auto_create_namespaces: bool = True,
                 event_log_size: int = 1024, event_log_age: float | None = None,
                 persistence: ApiPersistence | None = None) -> None:
        """With ``persistence``, the objects it holds come back and every commit is written to it."""
        self.registry = registry
        self.auto_create_namespaces = auto_create_namespaces
        # The watch history per resource type, as the API server's watch cache: older resourceVersions get 410.
        self.events = EventLog(event_log_size, max_age=event_log_age)
        self._objects: dict[StorageKey, dict[ObjectKey, Object]] = {}
        self._uids: dict[str, tuple[StorageKey, ObjectKey]] = {}
        self.persistence = persistence
        if persistence is not None:
            self._restore(persistence.load())
        for name in ("default", "kube-system", "kube-public"):
            if (None, name) not in self._objects.get(_NAMESPACES, {}):
                self.create(self._resource(_NAMESPACES), None, {"metadata": {"name": name}})

    def _restore(self, state: LoadedState) -> None:
        """Objects as committed before (CRDs come first: they register their resources)."""
        for storage, key, obj in state.objects:
            if storage == _CRDS:
                self._sync_crd(obj, removed=False)
            self._objects.setdefault(storage, {})[key] = obj
            self._uids[obj["metadata"]["uid"]] = (storage, key)
        # The counter goes on from where it stopped, and nothing before it can be replayed: a watch
        # from an older resourceVersion gets 410 Gone and lists again.
        self.events._rv = self.events._compacted_rv = state.resource_version

    # Reading.

    @property
    def resource_version(self) -> str:
        return str(self.events.last_rv)

    def _resource(self, storage: StorageKey) -> ApiResource:
        resource = self.registry.preferred(storage)
        if resource is None:
            raise LookupError(f"Unknown resource: {storage}")
        return resource

    @staticmethod
    def _key(resource: ApiResource, namespace: str | None, name: str) -> ObjectKey:
        return (namespace if resource.namespaced else None, name)

    @staticmethod
    def render(resource: ApiResource, obj: Mapping[str, Any]) -> Object:
        """A detached copy of a stored object, as served at this resource's version."""
        rendered = copy.deepcopy(dict(obj))
        rendered["apiVersion"] = resource.api_version
        rendered["kind"] = resource.kind
        return rendered

    def _stored(self, resource: ApiResource, namespace: str | None, name: str) -> Object:
        obj = self._objects.get(resource.storage, {}).get(self._key(resource, namespace, name))
        if obj is None:
            raise errors.not_found(resource, name)
        return obj

    def get(self, resource: ApiResource, namespace: str | None, name: str) -> Object:
        return self.render(resource, self._stored(resource, namespace, name))

    def find(self, resource: ApiResource, namespace: str | None, name: str) -> Object | None:
        obj = self._objects.get(resource.storage, {}).get(self._key(resource, namespace, name))
        return None if obj is None else self.render(resource, obj)

    def iter_stored(self, resource: ApiResource, namespace: str | None = None,
                    labels: LabelSelector | None = None,
                    fields: FieldSelector | None = None) -> Iterator[Object]:
        """The stored objects themselves (not copies!), for read-only scans within one loop step."""
        for (obj_namespace, _), obj in self._objects.get(resource.storage, {}).items():
            if namespace is not None and resource.namespaced and obj_namespace != namespace:
                continue
            if labels is not None and not labels.matches(obj):
                continue
            if fields is not None and not fields.matches(obj):
                continue
            yield obj

    def list_objects(self, resource: ApiResource, namespace: str | None = None,
             labels: LabelSelector | None = None, fields: FieldSelector | None = None) -> list[Object]:
        items = [self.render(resource, obj) for obj in self.iter_stored(resource, namespace, labels, fields)]
        return sorted(items, key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))

    def watch(self, resource: ApiResource, namespace: str | None = None, *,
              labels: LabelSelector | None = None, fields: FieldSelector | None = None,
              since: str | None = None, initial_events_bookmark: bool = False) -> Watcher:
        """
        Start a watch-stream; without ``since`` (or with "0"), it begins with ADDED for every object.

        With ``since``, it replays the changes after that resourceVersion (410 Gone if forgotten).
        """
        try:
            since_rv = int(since) if since not in (None, "", "0") else None
        except ValueError:
            raise errors.bad_request(f"invalid resourceVersion: {since!r}") from None
        namespace = namespace if resource.namespaced else None
        initial = None if since_rv is not None else list(self.iter_stored(resource, namespace, labels, fields))
        bookmark = None
        if initial_events_bookmark:
            bookmark = {"kind": resource.kind, "apiVersion": resource.api_version, "metadata": {
                "resourceVersion": self.resource_version,
                "annotations": {"k8s.io/initial-events-end": "true"},
            }}
        return Watcher(
            self.events, resource.storage, namespace, initial=initial, since=since_rv, initial_bookmark=bookmark,
            matches=lambda obj: (labels is None or labels.matches(obj)) and (fields is None or fields.matches(obj)),
            render=lambda obj: self.render(resource, obj),
        )

    # Writing.

    def create(self, resource: ApiResource, namespace: str | None, body: Any, *, dry_run: bool = False,
               validation: FieldValidation | None = None) -> Object:
        """``validation``: the request's fieldValidation directive; its warnings are collected there."""
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        self._check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if resource.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace"
                                         " sent on the request")
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise errors.bad_request("a namespace is required for a namespaced resource")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.invalid(resource, None, "metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
        name = meta["name"]
        admission.validate_name(resource, name)
        key = self._key(resource, namespace, name)
        if key in self._objects.get(resource.storage, {}):
            raise errors.already_exists(resource, name)
        if namespace is not None:
            self._ensure_namespace(namespace, dry_run=dry_run)

        now = timestamps.now()
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "resourceVersion"):
            meta.pop(transient, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now, generation=1)
        if resource.has_status:
            obj.pop("status", None)  # as the real create strategies do: status is the controllers' business
        admission.admit_create(resource, obj, now, validation)
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        if dry_run:
            return self.render(resource, obj)
        return self._commit(resource, key, None, obj)

    def replace(self, resource: ApiResource, namespace: str | None, name: str, body: Any, *,
                subresource: str | None = None, dry_run: bool = False,
                validation: FieldValidation | None = None) -> Object:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        if subresource == "scale":
            return self._write_scale(resource, self._stored(resource, namespace, name), body, dry_run=dry_run)
        self._check_type(resource, body)
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise errors.bad_request(f"the name of the object ({body_name}) does not match"
                                     f" the name on the URL ({name})")
        old = self._stored(resource, namespace, name)
        if resource.custom and not (body.get("metadata") or {}).get("resourceVersion"):
            # Custom resources do not allow unconditional updates (built-in kinds do).
            why = "Invalid value: 0x0: must be specified for an update"
            raise errors.ApiError(422, "Invalid", f'{resource.kind}.{resource.group} "{name}" is invalid:'
                                  f' metadata.resourceVersion: {why}', {
                                      "name": name, "group": resource.group, "kind": resource.kind,
                                      "causes": [{"reason": "FieldValueInvalid", "message": why,
                                                  "field": "metadata.resourceVersion"}]})
        return self._update(resource, old, copy.deepcopy(body), subresource=subresource, dry_run=dry_run,
                            validation=validation)

    def patch(self, resource: ApiResource, namespace: str | None, name: str, patch_type: str, patch: Any, *,
              subresource: str | None = None, dry_run: bool = False,
              validation: FieldValidation | None = None) -> Object:
        key = self._key(resource, namespace, name)
        old = self._objects.get(resource.storage, {}).get(key)
        if old is None and patch_type == PatchType.APPLY and subresource is None:
            body = dict(patch or {}, metadata={**((patch or {}).get("metadata") or {}), "name": name})
            return self.create(resource, namespace, body, dry_run=dry_run, validation=validation)
        if old is None:
            raise errors.not_found(resource, name)
        if patch_type == PatchType.STRATEGIC and resource.custom:
            raise errors.ApiError(415, "UnsupportedMediaType",
                                  "strategic merge patch is not supported for custom resources", None)
        current = self.scale_of(resource, old) if subresource == "scale" else self.render(resource, old)
        try:
            new = patching.apply_patch(patch_type, current, patch)
        except patching.PatchFormatError as exc:
            raise errors.bad_request(str(exc)) from None
        except patching.PatchError as exc:
            raise errors.ApiError(422, "Invalid", f"the server rejected our request due to an error in our"
                                  f" request: {exc}", None) from None
        if subresource == "scale":
            return self._write_scale(resource, old, new, dry_run=dry_run)
        return self._update(resource, old, new, subresource=subresource, dry_run=dry_run,
                            validation=(validation or FieldValidation()).for_patch())

    scale_of = staticmethod(scale_view)

    def _write_scale(self, resource: ApiResource, old: Object, scale: Mapping[str, Any], *, dry_run: bool) -> Object:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(resource, old["metadata"]["name"], "spec.replicas: a non-negative integer is required")
        candidate = self.render(resource, old)
        candidate["spec"] = {**(candidate.get("spec") or {}), "replicas": replicas}
        candidate["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
        return self.scale_of(resource, self._update(resource, old, candidate, subresource=None, dry_run=dry_run))

    def _update(self, resource: ApiResource, old: Object, candidate: Object, *,
                subresource: str | None, dry_run: bool, validation: FieldValidation | None = None) -> Object:
        name = old["metadata"]["name"]
        meta = candidate.get("metadata")
        if not isinstance(meta, dict):
            meta = candidate["metadata"] = {}
        expected_rv = meta.get("resourceVersion")
        if expected_rv and str(expected_rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
        elif subresource is not None:
            raise errors.resource_not_found(f"{subresource} subresource")
        else:
            new = candidate
            if resource.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            new_meta = new["metadata"]
            for immutable in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                              "deletionGracePeriodSeconds", "generation"):
                new_meta.pop(immutable, None)
                if immutable in old["metadata"]:
                    new_meta[immutable] = old["metadata"][immutable]
            new_meta.pop("managedFields", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(new_meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise errors.forbidden_change(resource, name, "no new finalizers can be added if the object"
                                                  " is being deleted")
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _content(new, resource) != _content(old, resource):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        admission.admit_update(resource, old, new, timestamps.now(), validation)
        if _without_rv(new) == _without_rv(old):
            return self.render(resource, old)  # a no-op write: no new resourceVersion, no watch event
        if dry_run:
            return self.render(resource, new)
        return self._commit(resource, self._key(resource, old["metadata"].get("namespace"), name), old, new)

    def delete(self, resource: ApiResource, namespace: str | None, name: str,
               options: Mapping[str, Any] | None = None, *, dry_run: bool = False) -> Object:
        options = options or {}
        old = self._stored(resource, namespace, name)
        meta = old["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(resource, name, "Precondition failed: UID in precondition does not match")
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(resource, name, "Precondition failed: resourceVersion does not match")
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        key = self._key(resource, meta.get("namespace"), name)
        if dry_run:
            return self.render(resource, old)
        if policy == "Foreground":
            self._collect_dependents(meta["uid"], orphan=False)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return self.render(resource, old)
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=timestamps.now(), deletionGracePeriodSeconds=0)
            if new["metadata"].get("generation"):  # deletion is a change controllers of the object must see
                new["metadata"]["generation"] = int(new["metadata"]["generation"]) + 1
            return self._commit(resource, key, old, new)
        result = self._commit(resource, key, old, old, deleting=True)
        self._after_delete(resource, result, orphan=(policy == "Orphan"))
        return result

    def delete_collection(self, resource: ApiResource, namespace: str | None, labels: LabelSelector | None,
                          fields: FieldSelector | None, options: Mapping[str, Any] | None = None, *,
                          dry_run: bool = False) -> list[Object]:
        victims = [(obj["metadata"].get("namespace"), obj["metadata"]["name"])
                   for obj in self.iter_stored(resource, namespace, labels, fields)]
        return [self.delete(resource, ns, name, options, dry_run=dry_run) for ns, name in victims]

    # Internals.

    def _check_type(self, resource: ApiResource, body: Mapping[str, Any]) -> None:
        kind, api_version = body.get("kind"), str(body.get("apiVersion") or "")
        if kind and kind != resource.kind:
            raise errors.bad_request(f"the kind {kind!r} does not match the resource {resource}")
        other_version = api_version and api_version != resource.api_version
        if other_version and not self.registry.by_kind(api_version, resource.kind):
            raise errors.bad_request(f"the apiVersion {api_version!r} does not match the resource {resource}")

    def _ensure_namespace(self, namespace: str, *, dry_run: bool) -> None:
        namespaces = self._resource(_NAMESPACES)
        if (None, namespace) in self._objects.get(_NAMESPACES, {}):
            return
        if not self.auto_create_namespaces:
            raise errors.not_found(namespaces, namespace)
        if not dry_run:
            self.create(namespaces, None, {"metadata": {"name": namespace}})

    def _commit(self, resource: ApiResource, key: ObjectKey, old: Object | None, new: Object, *,
                deleting: bool = False) -> Object:
        meta = new["metadata"]
        # Removing the last finalizer of an object being deleted deletes it in the same write.
        finalized = not deleting and bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")
        deleting = deleting or finalized
        rv = self.events.next_rv()
        new = copy.deepcopy(new) if new is old else new
        new["metadata"]["resourceVersion"] = str(rv)
        bucket = self._objects.setdefault(resource.storage, {})
        if deleting:
            bucket.pop(key, None)
            self._uids.pop(meta["uid"], None)
            event_type = "DELETED"
        else:
            bucket[key] = new
            self._uids[meta["uid"]] = (resource.storage, key)
            event_type = "ADDED" if old is None else "MODIFIED"
        if resource.storage == _CRDS:
            self._sync_crd(new, removed=deleting)
        if self.persistence is not None:  # on disk before the API answers, and before any watcher hears of it
            self.persistence.record(resource.storage, key, None if deleting else new, self.events.last_rv)
        self.events.publish(StoreEvent(event_type, resource.storage, key[0], new, old, rv))
        if finalized:
            self._after_delete(resource, new, orphan=False)
        return self.render(resource, new)
