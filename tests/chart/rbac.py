"""Kubernetes RBAC, as much of it as the chart tests need: which rule a request needs, and which allows it.

A request (method, path, query) becomes an ``Access``: API group, resource (with "/subresource"), verb,
namespace and name, following the API server's own request-info rules (GET on a collection is list,
with ?watch=true it is watch, PATCH is patch, DELETE on a collection is deletecollection, ...).
Paths outside resources (discovery, /version, /openapi) are non-resource URLs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# Granted to every authenticated user by the API server's default bindings (system:discovery,
# system:public-info-viewer, system:basic-user): an operator's role does not need to repeat them.
DEFAULT_NON_RESOURCE_URLS = ("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version",
                             "/version/", "/healthz", "/livez", "/readyz")


@dataclasses.dataclass(frozen=True)
class Access:
    verb: str
    group: str = ""
    resource: str = ""  # "jobs", "modelreleases/status"
    namespace: str | None = None
    name: str | None = None
    non_resource_url: str | None = None

    @property
    def cluster_scoped(self) -> bool:
        return self.namespace is None

    def __str__(self) -> str:
        if self.non_resource_url:
            return f"{self.verb} {self.non_resource_url}"
        where = f" in {self.namespace}" if self.namespace else " (all namespaces)" if self.name is None else ""
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{named}{where}"


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete", "GET": "get", "HEAD": "get"}


def access_of(method: str, path: str, query: Mapping[str, str]) -> Access:
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return Access(verb=_VERBS.get(method, method.lower()), non_resource_url=path)
    namespace = None
    # /namespaces/X/<plural>... is a scope; /namespaces/X and /namespaces/X/status are the namespace itself.
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource += "/" + "/".join(rest[2:])
    if rest[0] == "namespaces" and name is not None:
        namespace = name  # a namespace is its own scope for RBAC
    verb = _VERBS.get(method, method.lower())
    watching = query.get("watch") in ("true", "1")
    if method in ("GET", "HEAD"):
        verb = "watch" if watching else ("get" if name else "list")
    elif method == "DELETE" and name is None:
        verb = "deletecollection"
    return Access(verb=verb, group=group, resource=resource, namespace=namespace, name=name)


@dataclasses.dataclass(frozen=True)
class Grant:
    """One (apiGroup, resource, verb) of one rule of one Role or ClusterRole."""

    role: str  # "ClusterRole/name" or "Role/namespace/name"
    namespace: str | None  # None: cluster-wide (a ClusterRole bound by a ClusterRoleBinding)
    group: str
    resource: str
    verb: str
    resource_names: tuple[str, ...] = ()

    def allows(self, access: Access) -> bool:
        if access.non_resource_url is not None:
            return False
        if self.namespace is not None and access.namespace != self.namespace:
            return False
        if self.group not in ("*", access.group) or self.verb not in ("*", access.verb):
            return False
        if self.resource != "*" and self.resource != access.resource:
            return False
        # resourceNames restrict requests that name one object; list, watch and create name none.
        return not self.resource_names or (access.name is not None and access.name in self.resource_names)

    def __str__(self) -> str:
        named = f" {list(self.resource_names)}" if self.resource_names else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{named} ({self.role})"


def grants_of(objects: Iterable[Mapping[str, Any]], service_account: tuple[str, str]) -> list[Grant]:
    """Every grant that the rendered bindings give to ``(namespace, name)`` of a ServiceAccount."""
    objects = list(objects)
    roles = {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj
             for obj in objects if obj["kind"] in ("Role", "ClusterRole")}
    found: list[Grant] = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = {(s.get("namespace"), s["name"]) for s in binding.get("subjects") or []
                    if s["kind"] == "ServiceAccount"}
        if service_account not in subjects:
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        label = f"{ref['kind']}/{scope + '/' if ref['kind'] == 'Role' else ''}{ref['name']}"
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule["verbs"]:
                        found.append(Grant(label, scope, group, resource, verb,
                                           tuple(rule.get("resourceNames") or ())))
    return found


def default_allows(access: Access) -> bool:
    """What every authenticated client may do without a role of its own (read discovery and version)."""
    return access.non_resource_url is not None and access.verb == "get" and any(
        fnmatch.fnmatchcase(access.non_resource_url, pattern) for pattern in DEFAULT_NON_RESOURCE_URLS)


def wildcards(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return [f"{obj['kind']}/{obj['metadata']['name']}: {field} {rule.get(field)}"
            for obj in objects if obj["kind"] in ("Role", "ClusterRole")
            for rule in obj.get("rules") or []
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
            if any("*" in value for value in rule.get(field) or [])]


def check_coverage(records: Iterable[Any], grants: list[Grant]) -> tuple[Counter[Access], list[Grant]]:
    """Fail on any request that the grants do not allow; return the uses and the grants never used."""
    accesses: Counter[Access] = Counter(access_of(r.method, r.path, r.query) for r in records)
    denied = [str(access) for access in accesses if not default_allows(access)
              and not any(grant.allows(access) for grant in grants)]
    assert not denied, "the chart's RBAC would forbid:\n  " + "\n  ".join(sorted(denied))
    unused = [grant for grant in grants if not any(grant.allows(access) for access in accesses)]
    return accesses, unused
