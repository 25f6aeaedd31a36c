"""
A minimal OpenAPI v3 discovery: just enough for kubectl to validate on the server side.

kubectl's default ``--validate=strict`` asks the OpenAPI v3 document of a group-version whether
PATCH of the kind accepts the ``fieldValidation`` parameter; if so, it leaves validation to the
server and needs no schemas (without any document it would demand client-side validation and
fail). So the documents list the operations of every resource, with no schemas: kubectl then
falls back to its compiled-in knowledge for strategic merge patches, as with ``--validate=false``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from modelrelease_local.resources import ApiResource, ResourceRegistry

__all__ = ["openapi_v3_document", "openapi_v3_index"]

_PARAMETERS = [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
               for name in ("dryRun", "fieldManager", "fieldValidation")]


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _operations(resource: ApiResource) -> dict[str, Any]:
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    scope = "/namespaces/{namespace}" if resource.namespaced else ""
    base = f"/{_prefix(resource.group, resource.version)}{scope}/{resource.plural}"

    def operation(verb: str) -> dict[str, Any]:
        return {"operationId": f"{verb}{resource.kind}", "parameters": _PARAMETERS,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk}

    return {
        base: {"post": operation("post")},
        f"{base}/{{name}}": {"get": operation("get"), "put": operation("put"), "patch": operation("patch"),
                             "delete": operation("delete")},
    }


def openapi_v3_document(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    members = [res for res in registry if res.group == group and res.version == version]
    if not members:
        return None
    paths: dict[str, Any] = {}
    for resource in sorted(members, key=lambda res: res.plural):
        if "patch" in resource.verbs or resource.custom:
            paths.update(_operations(resource))
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "embedded"},
            "paths": paths, "components": {"schemas": {}}}


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
