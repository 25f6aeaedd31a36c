"""
OpenAPI v3 discovery: the operations of every resource, and the schemas of custom resources.

kubectl reads these documents for two things:
- its default ``--validate=strict`` asks whether PATCH of a kind accepts the ``fieldValidation``
  parameter; if so, it leaves validation to the server (without any document it would demand
  client-side validation and fail). So every resource's operations are listed.
- ``kubectl explain`` finds a kind's schema in ``components.schemas`` by its
  ``x-kubernetes-group-version-kind``. A custom resource's schema is its CRD version's
  ``openAPIV3Schema``, named and completed as the real server publishes it (``metadata`` refers to
  ObjectMeta). Built-in kinds have no schemas here.

A custom resource's PATCH lists only the patch formats the server accepts for it (no strategic
merge patch), as the real server's document does: that is how ``kubectl apply`` knows to send a
JSON merge patch.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelrelease_local.resources import ApiResource, ResourceRegistry

__all__ = ["openapi_v3_document", "openapi_v3_index", "schema_name"]

_PARAMETERS = [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
               for name in ("dryRun", "fieldManager", "fieldValidation")]
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_OBJECT_META = f"{_META}.ObjectMeta"
_LIST_META = f"{_META}.ListMeta"
_PATCH = f"{_META}.Patch"
_CUSTOM_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")

_API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert"
    " recognized schemas to the latest internal value, and may reject unrecognized values. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources")
_KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this"
    " from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds")
_METADATA_DESCRIPTION = (
    "Standard object's metadata. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")

# Enough of the meta/v1 types for `kubectl explain KIND.metadata` (the real documents carry all of them).
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
_META_SCHEMAS: dict[str, Any] = {
    _OBJECT_META: {
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects"
                       " users must create.",
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Name must be unique within a namespace."},
            "generateName": {"type": "string", "description": "An optional prefix, used by the server to generate"
                                                              " a unique name ONLY IF the Name field has not been"
                                                              " provided."},
            "namespace": {"type": "string", "description": "The namespace in which the name must be unique."},
            "uid": {"type": "string", "description": "The unique in time and space value for this object."},
            "resourceVersion": {"type": "string", "description": "An opaque value that represents the internal"
                                                                 " version of this object."},
            "generation": {"type": "integer", "format": "int64",
                           "description": "A sequence number representing a specific generation of the desired"
                                          " state."},
            "creationTimestamp": {"type": "string", "format": "date-time",
                                  "description": "The time this object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time",
                                  "description": "The time at which this resource will be deleted."},
            "labels": {**_STRING_MAP, "description": "Map of string keys and values that can be used to organize"
                                                     " and categorize (scope and select) objects."},
            "annotations": {**_STRING_MAP, "description": "An unstructured key value map stored with a resource"
                                                          " that may be set by external tools."},
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""},
                           "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object"},
                                "description": "List of objects depended by this object."},
        },
    },
    _LIST_META: {
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "type": "object",
        "properties": {
            "continue": {"type": "string", "description": "Set if the user can retrieve more results."},
            "resourceVersion": {"type": "string", "description": "The version of the list."},
        },
    },
    _PATCH: {"type": "object", "description": "Patch is provided to give a concrete name and type to the"
                                              " Kubernetes PATCH request body."},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def schema_name(resource: ApiResource, kind: str | None = None) -> str:
    """The real server's name for a custom kind's schema: the reversed group, version, kind."""
    reversed_group = ".".join(reversed(resource.group.split(".")))
    return f"{reversed_group}.{resource.version}.{kind or resource.kind}"


def _gvk(resource: ApiResource, kind: str | None = None) -> dict[str, str]:
    return {"group": resource.group, "kind": kind or resource.kind, "version": resource.version}


def _custom_schemas(resource: ApiResource, structural: Mapping[str, Any]) -> dict[str, Any]:
    published = copy.deepcopy(dict(structural))
    properties = published.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "description": _API_VERSION_DESCRIPTION}
    properties["kind"] = {"type": "string", "description": _KIND_DESCRIPTION}
    properties["metadata"] = {"allOf": [_ref(_OBJECT_META)], "description": _METADATA_DESCRIPTION}
    published["x-kubernetes-group-version-kind"] = [_gvk(resource)]
    list_kind = resource.list_kind
    listed = {
        "description": f"{list_kind} is a list of {resource.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_DESCRIPTION},
            "items": {"type": "array", "description": f"List of {resource.plural}. More info:"
                      " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                      "items": _ref(schema_name(resource))},
            "kind": {"type": "string", "description": _KIND_DESCRIPTION},
            "metadata": {"allOf": [_ref(_LIST_META)], "description": "ListMeta describes metadata that synthetic"
                                                                     " resources must have"},
        },
        "x-kubernetes-group-version-kind": [_gvk(resource, list_kind)],
    }
    return {schema_name(resource): published, schema_name(resource, list_kind): listed}


def _operations(resource: ApiResource, typed: bool) -> dict[str, Any]:
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    base = f"/{_prefix(resource.group, resource.version)}{scope}/{resource.plural}"
    kind_name, list_name = schema_name(resource), schema_name(resource, resource.list_kind)

    def content(name: str, media_types: tuple[str, ...] = ("application/json", "application/yaml")) -> dict[str, Any]:
        return {"content": {media_type: {"schema": _ref(name)} for media_type in media_types}}

    def operation(verb: str, body: dict[str, Any] | None = None, answer: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {"operationId": f"{verb}{resource.kind}", "parameters": _PARAMETERS,
                                 "responses": {"200": {"description": "OK", **(content(answer) if answer else {})}},
                                 "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk}
        if body is not None:
            found["requestBody"] = body
        return found

    if not typed:
        return {
            base: {"post": operation("post")},
            f"{base}/{{name}}": {"get": operation("get"), "put": operation("put"), "patch": operation("patch"),
                                 "delete": operation("delete")},
        }
    return {
        base: {"get": operation("list", answer=list_name), "post": operation("post", content(kind_name), kind_name)},
        f"{base}/{{name}}": {
            "get": operation("get", answer=kind_name),
            "put": operation("put", content(kind_name), kind_name),
            "patch": operation("patch", content(_PATCH, _CUSTOM_PATCH_TYPES), kind_name),
            "delete": operation("delete"),
        },
    }


def openapi_v3_document(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    members = [res for res in registry if res.group == group and res.version == version]
    if not members:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for resource in sorted(members, key=lambda res: res.plural):
        typed = resource.custom and resource.schema is not None
        if typed and resource.schema is not None:
            schemas.update(_custom_schemas(resource, resource.schema))
        if "patch" in resource.verbs or resource.custom:
            paths.update(_operations(resource, typed))
    if schemas:
        schemas.update(copy.deepcopy(_META_SCHEMAS))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "embedded"},
            "paths": paths, "components": {"schemas": schemas}}


def openapi_v3_index(registry: ResourceRegistry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for version in versions:
            document = openapi_v3_document(registry, group, version)
            # kubectl caches the documents by this hash, so it must change with the content.
            digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()
            prefix = _prefix(group, version)
            paths[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest}"}
    return {"paths": paths}
