"""The RBAC model the coverage test relies on: requests to accesses, rules to grants, and a failing check."""

from __future__ import annotations

import pytest

from modelrelease_local.recording import RequestRecord
from tests.chart.rbac import Access, access_of, check_coverage, default_allows, grants_of, wildcards

ACCOUNT = ("ops", "operator")


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/apis/batch/v1/jobs", {}, Access("list", "batch", "jobs")),
    ("GET", "/apis/batch/v1/jobs", {"watch": "true", "resourceVersion": "7"}, Access("watch", "batch", "jobs")),
    ("GET", "/apis/batch/v1/namespaces/ns/jobs", {"labelSelector": "a=b"}, Access("list", "batch", "jobs", "ns")),
    ("GET", "/apis/batch/v1/namespaces/ns/jobs", {"watch": "1"}, Access("watch", "batch", "jobs", "ns")),
    ("GET", "/apis/batch/v1/namespaces/ns/jobs/j", {}, Access("get", "batch", "jobs", "ns", "j")),
    ("POST", "/apis/batch/v1/namespaces/ns/jobs", {}, Access("create", "batch", "jobs", "ns")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", {}, Access("delete", "batch", "jobs", "ns", "j")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs", {}, Access("deletecollection", "batch", "jobs", "ns")),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d", {}, Access("update", "apps", "deployments", "ns", "d")),
    ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/d/scale", {},
     Access("patch", "apps", "deployments/scale", "ns", "d")),
    ("PATCH", "/apis/modelrelease.io/v1alpha1/namespaces/ns/modelreleases/r/status", {},
     Access("patch", "modelrelease.io", "modelreleases/status", "ns", "r")),
    ("POST", "/api/v1/namespaces/ns/events", {}, Access("create", "", "events", "ns")),
    ("GET", "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r", {},
     Access("get", "gateway.networking.k8s.io", "httproutes", "ns", "r")),
    ("PUT", "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r", {},
     Access("update", "gateway.networking.k8s.io", "httproutes", "ns", "r")),
    ("GET", "/api/v1/namespaces/ns/secrets/s", {}, Access("get", "", "secrets", "ns", "s")),
    ("GET", "/api/v1/namespaces", {}, Access("list", "", "namespaces")),
    ("GET", "/api/v1/namespaces/ns", {}, Access("get", "", "namespaces", "ns", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", {}, Access("update", "", "namespaces/finalize", "ns", "ns")),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {"watch": "true"},
     Access("watch", "apiextensions.k8s.io", "customresourcedefinitions")),
    ("GET", "/apis", {}, Access("get", non_resource_url="/apis")),
    ("GET", "/apis/batch/v1", {}, Access("get", non_resource_url="/apis/batch/v1")),
    ("GET", "/api/v1", {}, Access("get", non_resource_url="/api/v1")),
    ("GET", "/version", {}, Access("get", non_resource_url="/version")),
])
def test_requests_map_to_accesses(method: str, path: str, query: dict[str, str], expected: Access):
    assert access_of(method, path, query) == expected


def test_discovery_is_allowed_by_default_but_nothing_else_is():
    assert default_allows(Access("get", non_resource_url="/apis/apps/v1"))
    assert not default_allows(Access("get", non_resource_url="/metrics"))
    assert not default_allows(Access("post", non_resource_url="/apis"))
    assert not default_allows(Access("get", "", "secrets", "ns", "s"))


def role(kind: str, name: str, rules: list[dict], namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "rules": rules}


def binding(kind: str, role_kind: str, name: str, namespace: str | None = None,
            account: tuple[str, str] = ACCOUNT) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": role_kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "namespace": account[0], "name": account[1]}]}


JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list"]}
SECRET = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["token"], "verbs": ["get"]}


def test_a_cluster_role_allows_every_namespace_and_cluster_wide_lists():
    grants = grants_of([role("ClusterRole", "c", [JOBS]), binding("ClusterRoleBinding", "ClusterRole", "c")], ACCOUNT)
    assert any(g.allows(Access("create", "batch", "jobs", "anywhere")) for g in grants)
    assert any(g.allows(Access("list", "batch", "jobs")) for g in grants)
    assert not any(g.allows(Access("delete", "batch", "jobs", "ns", "j")) for g in grants)
    assert not any(g.allows(Access("list", "apps", "jobs", "ns")) for g in grants)


def test_a_role_allows_only_its_namespace():
    grants = grants_of([role("Role", "r", [JOBS], "a"), binding("RoleBinding", "Role", "r", "a")], ACCOUNT)
    assert any(g.allows(Access("create", "batch", "jobs", "a")) for g in grants)
    assert not any(g.allows(Access("create", "batch", "jobs", "b")) for g in grants)
    assert not any(g.allows(Access("list", "batch", "jobs")) for g in grants)  # cluster-wide list


def test_bindings_of_other_accounts_grant_nothing():
    objects = [role("ClusterRole", "c", [JOBS]), binding("ClusterRoleBinding", "ClusterRole", "c",
                                                         account=("ops", "someone-else"))]
    assert grants_of(objects, ACCOUNT) == []


def test_resource_names_limit_gets_and_never_allow_lists():
    grants = grants_of([role("ClusterRole", "c", [SECRET]), binding("ClusterRoleBinding", "ClusterRole", "c")],
                       ACCOUNT)
    assert any(g.allows(Access("get", "", "secrets", "ns", "token")) for g in grants)
    assert not any(g.allows(Access("get", "", "secrets", "ns", "other")) for g in grants)
    assert not any(g.allows(Access("list", "", "secrets", "ns")) for g in grants)


def test_wildcards_are_found():
    assert wildcards([role("ClusterRole", "c", [{"apiGroups": ["*"], "resources": ["jobs"], "verbs": ["get"]}])])
    assert wildcards([role("Role", "r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}], "a")])
    assert not wildcards([role("ClusterRole", "c", [JOBS, SECRET])])


def test_the_coverage_check_fails_on_a_request_no_rule_allows():
    grants = grants_of([role("ClusterRole", "c", [JOBS]), binding("ClusterRoleBinding", "ClusterRole", "c")], ACCOUNT)
    allowed = [RequestRecord("POST", "/apis/batch/v1/namespaces/ns/jobs", {}, None, 201),
               RequestRecord("GET", "/apis/batch/v1", {}, None, 200)]
    accesses, unused = check_coverage(allowed, grants)
    assert sum(accesses.values()) == 2 and [str(g) for g in unused] == ["list batch/jobs (ClusterRole/c)"]
    with pytest.raises(AssertionError, match="delete batch/jobs j in ns"):
        check_coverage([*allowed, RequestRecord("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j", {}, None, 200)],
                       grants)
