"""The aggregated ClusterRoles for people: what the chart renders, and that they cover `kubectl modelrelease`.

The chart's `<fullname>-view` and `<fullname>-edit` are bound to no one; their labels add them to the
cluster's built-in view, edit and admin roles. The coverage test runs the real plugin through the real
kubectl against the real operator on the embedded API server. The plugin reaches the server through a
recording proxy (tests/chart/recording_proxy.py), which notes the User-Agent of each request, so that
exactly the plugin's requests are taken from the server's request log (the operator's, made at the same
time on the same release, stay out). Each is then checked against the built-in role plus the chart's
role, bound in the release's namespace as `kubectl create rolebinding --clusterrole=edit` would.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest

from tests.chart.rbac import Access, Grant, check_coverage, grants_of, wildcards
from tests.chart.recording_proxy import RecordingProxy, picked_from_the_log
from tests.chart.rendering import Rendered, render
from tests.operator.conftest import Harness
from tests.plugin.conftest import kubectl, waiting_spec

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
PLUGIN_USER_AGENT = "kubectl-modelrelease/0.1.0"
RELEASES = ("modelrelease.io", "modelreleases")
READ = ["get", "list", "watch"]

# The few rules of Kubernetes' own roles that the plugin relies on, written out by hand: the bootstrap
# ClusterRole system:aggregate-to-view (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go) grants
# Read (get, list, watch) on core events and apps deployments, among much else. It aggregates into view,
# and view (labelled aggregate-to-edit) into edit, and edit into admin: the same rules are in all three.
BUILTIN_RULES = [
    {"apiGroups": [""], "resources": ["events"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": READ},
]

READ_ONLY_COMMANDS = [("list",), ("get", "digits"), ("history", "digits"), ("explain", "digits"),
                      ("status", "digits", "--timeout", "2s")]
WRITE_COMMANDS = [("promote", "digits", "--wait"), ("pause", "digits"), ("resume", "digits")]


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


def aggregated_into(rendered: Rendered, role: str) -> list[dict[str, Any]]:
    """The rendered ClusterRoles that Kubernetes aggregates into its built-in ``role`` (view, edit, admin)."""
    return [obj for obj in rendered.of_kind("ClusterRole")
            if (obj["metadata"].get("labels") or {}).get(AGGREGATE + role) == "true"]


def effective_grants(rendered: Rendered, role: str, namespace: str) -> list[Grant]:
    """The built-in ``role`` as the plugin sees it (its relevant rules plus the chart's aggregated role),
    bound by a RoleBinding in ``namespace`` to a stand-in for a person.

    Only the chart's role labelled for ``role`` itself is added, not the view role that reaches edit
    through view: the edit role is checked to stand on its own."""
    rules = [*BUILTIN_RULES, *(rule for obj in aggregated_into(rendered, role) for rule in obj["rules"])]
    person = (namespace, "release-engineer")
    objects = [
        {"kind": "ClusterRole", "metadata": {"name": role}, "rules": rules},
        {"kind": "RoleBinding", "metadata": {"name": f"release-engineer-{role}", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": person[1], "namespace": person[0]}]},
    ]
    return grants_of(objects, person)


# What the chart renders.

def test_view_and_edit_roles_aggregate_into_the_built_in_roles(default: Rendered):
    fullname = default.deployment["metadata"]["name"]
    assert [r["metadata"]["name"] for r in aggregated_into(default, "view")] == [f"{fullname}-view"]
    assert [r["metadata"]["name"] for r in aggregated_into(default, "edit")] == [f"{fullname}-edit"]
    assert [r["metadata"]["name"] for r in aggregated_into(default, "admin")] == [f"{fullname}-edit"]
    roles = {obj["metadata"]["name"]: obj for obj in default.of_kind("ClusterRole")}
    view, edit = roles[f"{fullname}-view"], roles[f"{fullname}-edit"]
    assert {k: v for k, v in view["metadata"]["labels"].items() if k.startswith(AGGREGATE)} == {
        AGGREGATE + "view": "true"}
    assert {k: v for k, v in edit["metadata"]["labels"].items() if k.startswith(AGGREGATE)} == {
        AGGREGATE + "edit": "true", AGGREGATE + "admin": "true"}
    assert view["metadata"]["labels"]["app.kubernetes.io/instance"] == default.release
    # Exactly these rules: no status subresource, no wildcards, nothing but ModelReleases.
    assert view["rules"] == [{"apiGroups": ["modelrelease.io"], "resources": ["modelreleases"], "verbs": READ}]
    assert edit["rules"] == [{"apiGroups": ["modelrelease.io"], "resources": ["modelreleases"],
                              "verbs": [*READ, "create", "update", "patch", "delete"]}]
    assert not wildcards([view, edit])
    assert "aggregationRule" not in view and "aggregationRule" not in edit
    # For people only: no binding of the chart refers to them.
    bound = {b["roleRef"]["name"] for b in default.of_kind("ClusterRoleBinding") + default.of_kind("RoleBinding")}
    assert not bound & {f"{fullname}-view", f"{fullname}-edit"}


def test_aggregated_roles_can_be_turned_off():
    rendered = render({"rbac": {"aggregatedRoles": False}})
    assert not any(AGGREGATE in key for obj in rendered.objects for key in obj["metadata"].get("labels") or {})
    # The operator's own RBAC is untouched.
    assert rendered.kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service",
                              "ServiceAccount"]


# What `kubectl modelrelease` needs.

def test_the_aggregated_roles_cover_every_request_of_the_plugin(harness: Harness, tmp_path: pathlib.Path):
    rendered = render()
    namespace = "default"
    harness.apply("digits", waiting_spec(harness.prometheus.url), namespace=namespace)
    harness.wait_phase("digits", "Progressing", namespace=namespace)

    with RecordingProxy(harness.server.url) as proxy:
        person = copy.copy(harness)  # the same cluster, reached through the proxy
        person.kubeconfig = proxy.kubeconfig(harness.kubeconfig, tmp_path / "person-kubeconfig")
        for args in READ_ONLY_COMMANDS:
            done = kubectl(person, *args)
            # status on a release still progressing: 2 (undecided within --timeout).
            assert done.returncode == (2 if args[0] == "status" else 0), (args, done.stdout, done.stderr)
        read_only = len(proxy.seen)
        for args in WRITE_COMMANDS:
            done = kubectl(person, *args)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            if args[0] == "promote":
                assert "promote of default/digits: handled" in done.stdout, done.stdout
    seen = proxy.seen
    assert seen and {s.user_agent for s in seen} == {PLUGIN_USER_AGENT}, {s.user_agent for s in seen}
    handled = [r["action"] for r in harness.status("digits", namespace).get("handledRequests") or []]
    assert handled[:1] == ["promote"], handled

    log = harness.server.requests.snapshot()
    everything = picked_from_the_log(log, seen)
    reads = picked_from_the_log(log, seen[:read_only])

    # edit (built-in rules + the chart's -edit role) covers every command.
    edit = effective_grants(rendered, "edit", namespace)
    accesses, unused = check_coverage(everything, edit)
    _report("edit", accesses, edit, unused)
    used = {(a.group, a.resource, a.verb) for a in accesses}
    assert {(*RELEASES, "get"), (*RELEASES, "list"), (*RELEASES, "watch"), (*RELEASES, "patch"),
            ("", "events", "list"), ("apps", "deployments", "list")} <= used, used
    # The plugin writes nothing but the release's annotations (merge patch of metadata), never the status.
    writes = [r for r in everything if r.is_write]
    assert writes and all(r.method == "PATCH" and set(r.body) == {"metadata"} for r in writes)
    assert not any(a.resource.startswith("modelreleases/") for a in accesses)
    assert all(a.namespace == namespace for a in accesses if a.non_resource_url is None)

    # view (built-in rules + the chart's -view role) covers the read-only commands ...
    view = effective_grants(rendered, "view", namespace)
    read_accesses, _ = check_coverage(reads, view)
    # ... and of those, the chart's -view role alone covers everything on ModelReleases.
    own_view = [g for g in view if g.group == "modelrelease.io"]
    check_coverage([r for r in reads if "/modelrelease.io/" in r.path], own_view)
    assert {(*RELEASES, verb) for verb in READ} <= {(a.group, a.resource, a.verb) for a in read_accesses}
    # view is not enough to ask for anything.
    patches = [a for a in accesses if a.verb == "patch"]
    assert patches and not any(g.allows(a) for a in patches for g in view)


def _report(title: str, accesses: Any, grants: list[Grant], unused: list[Grant]) -> None:
    print(f"\n== kubectl modelrelease under {title}: {sum(accesses.values())} requests, "
          f"{len(accesses)} distinct accesses")
    for grant in grants:
        print(f"  {sum(n for a, n in accesses.items() if grant.allows(a)):6d}  {grant}")
    if unused:  # create, update and delete are for kubectl apply/delete, which the plugin never does
        print("  unused here: " + "; ".join(map(str, unused)))


def test_a_person_with_view_is_refused_what_edit_adds(default: Rendered):
    view = effective_grants(default, "view", "default")
    edit = effective_grants(default, "edit", "default")
    for verb in ("create", "update", "patch", "delete"):
        access = Access(verb=verb, group="modelrelease.io", resource="modelreleases", namespace="default",
                        name=None if verb == "create" else "digits")
        assert not any(g.allows(access) for g in view) and any(g.allows(access) for g in edit), verb
    status = Access(verb="patch", group="modelrelease.io", resource="modelreleases/status", namespace="default",
                    name="digits")
    assert not any(g.allows(status) for g in view + edit)
    # A RoleBinding grants in its namespace only.
    elsewhere = Access(verb="get", group="modelrelease.io", resource="modelreleases", namespace="team-a",
                       name="digits")
    assert not any(g.allows(elsewhere) for g in edit)
