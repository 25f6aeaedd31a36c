"""The chart's RBAC covers exactly what the operator does.

The real operator process runs with the arguments of the rendered Deployment against the embedded API
server, through whole releases: one promoted to Released (with Prometheus credentials read from a
Secret), one aborted while its second stage trains (its Job deleted), and both deleted (kopf's
finalizer). The rendered arguments include leader election (on by default), so the operator also
creates, reads and renews its Lease in the release namespace. Every request in the server's log is
then mapped to the RBAC access it needs and checked against the rendered roles. The first Job and
Service creates are answered 409 to take the operator down its adopt path. The test's own changes go
straight to the server's store, so the log holds the operator's requests only.

Rules that nothing used are listed in the test's output, not failed on; only wildcards fail. A last test
runs two replicas with the rendered arguments through a takeover and a release of the Lease.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrelease import metrics
from modelrelease_local.outcomes import JobOutcome
from modelrelease_local.patching import PatchType
from modelrelease_local.ports import free_port
from modelrelease_local.recording import RequestRecord
from tests.chart.rbac import Access, Grant, check_coverage, default_allows, grants_of, wildcards
from tests.chart.rendering import Rendered, render
from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for

RELEASES = ("modelrelease.io/v1alpha1", "modelreleases")


def pod_env(rendered: Rendered, pod_name: str) -> dict[str, str]:
    """The container's env as the kubelet fills it in: values as given, the downward API's fieldRefs."""
    fields = {"metadata.name": pod_name, "metadata.namespace": rendered.namespace}
    env = {}
    for var in rendered.container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def start_pod(harness: Harness, rendered: Rendered, pod_name: str, args: list[str] | None = None,
              ) -> subprocess.Popen[bytes]:
    """`modelrelease run <the Deployment's args>` with the pod's env, as pod ``pod_name`` would run it."""
    harness.starts += 1
    log = open(harness.logdir / f"operator-{harness.starts}.log", "wb")  # noqa: SIM115 - lives with the process
    env = {**os.environ, **pod_env(rendered, pod_name), "KUBECONFIG": str(harness.kubeconfig)}
    return subprocess.Popen([sys.executable, "-m", "modelrelease", "run", *(args or rendered.container["args"])],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def start_operator_as_rendered(harness: Harness, rendered: Rendered) -> None:
    """The rendered Deployment's one pod, in place of the fixture's own operator."""
    harness.kill_operator()
    harness.process = start_pod(harness, rendered, f"{rendered.deployment['metadata']['name']}-7d4b9c-x2k8p")


def lease_of(rendered: Rendered) -> tuple[str, str]:
    """(namespace, name) of the Lease the rendered arguments name; the release namespace."""
    args = dict(arg.split("=", 1) for arg in rendered.container["args"] if "=" in arg)
    return args["--leader-election-namespace"], args["--leader-election-id"]


def lease_accesses(accesses: Counter[Access]) -> set[tuple[str, str | None, str | None]]:
    return {(a.verb, a.namespace, a.name) for a in accesses if a.resource == "leases"}


class Store:
    """The test's own writes and reads, straight to the server's store: none of them is an HTTP request."""

    def __init__(self, harness: Harness):
        self.server = harness.server

    def create(self, api_version: str, plural: str, namespace: str, body: dict[str, Any]) -> None:
        self.server.call(self.server.store.create, self.server.resource(api_version, plural), namespace, body)

    def release(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.server.get_object(*RELEASES, namespace, name)

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return (self.release(namespace, name) or {}).get("status") or {}

    def apply(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.create(*RELEASES, namespace, {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
                                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})

    def patch_spec(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.server.call(self.server.store.patch, self.server.resource(*RELEASES), namespace, name,
                         PatchType.MERGE, {"spec": patch})

    def delete(self, namespace: str, name: str) -> None:
        self.server.call(self.server.store.delete, self.server.resource(*RELEASES), namespace, name)

    def wait_phase(self, namespace: str, name: str, phase: str, harness: Harness) -> dict[str, Any]:
        try:
            return wait_for(lambda: (s := self.status(namespace, name)).get("phase") == phase and s,
                            f"{namespace}/{name} to reach {phase}")
        except pytest.fail.Exception:
            print(harness.operator_log()[-4000:])
            raise


def run_releases(harness: Harness, namespaces: tuple[str, str]) -> list[RequestRecord]:
    """Two releases through the operator already started; returns the operator's requests."""
    store = Store(harness)
    first_ns, second_ns = namespaces

    # A whole release, with the Prometheus token read from a Secret. Its first Job and Service creates
    # are answered 409, so the operator takes the path it takes after a restart: read the object to
    # adopt it (here it is not there, so the pass fails and the next one creates it).
    for plural in ("jobs", "services"):
        harness.server.fail_next("POST", f"/namespaces/{first_ns}/{plural}", status=409, reason="AlreadyExists",
                                 message=f"{plural} already exists")
    store.create("v1", "secrets", first_ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prometheus-token", "namespace": first_ns},
        "data": {"token": base64.b64encode(b"not-a-real-token").decode()}})
    spec = release_spec(harness.prometheus.url)
    spec["analysis"]["prometheus"]["bearerTokenSecretRef"] = {"name": "prometheus-token", "key": "token"}
    store.apply(first_ns, "digits", spec)
    store.wait_phase(first_ns, "digits", "Released", harness)

    # A release aborted while its second stage trains: the running Job is deleted.
    spec = release_spec(harness.prometheus.url)
    harness.training.failures[spec["stages"][1]["name"]] = JobOutcome.run_forever()
    store.apply(second_ns, "endless", spec)
    wait_for(lambda: (s := store.status(second_ns, "endless")).get("stageIndex") == 1
             and s["stages"][1].get("phase") == "Training" and s["stages"][1].get("jobName"),
             "the second stage training")
    store.patch_spec(second_ns, "endless", {"actions": {"abort": "abort-1"}})
    store.wait_phase(second_ns, "endless", "RolledBack", harness)

    # Deleting both: kopf's finalizer lets them go.
    for namespace, name in ((first_ns, "digits"), (second_ns, "endless")):
        store.delete(namespace, name)
    for namespace, name in ((first_ns, "digits"), (second_ns, "endless")):
        wait_for(lambda: store.release(namespace, name) is None, f"{namespace}/{name} gone")  # noqa: B023
    return harness.server.requests.snapshot()


def report(title: str, accesses: Counter[Access], grants: list[Grant], unused: list[Grant]) -> None:
    print(f"\n== {title}: {sum(accesses.values())} requests, {len(accesses)} distinct accesses")
    for grant in grants:
        uses = sum(n for access, n in accesses.items() if grant.allows(access))
        print(f"  {uses:6d}  {grant}")
    defaults = sorted({str(a) for a in accesses if default_allows(a)})
    print(f"  discovery (default roles): {', '.join(defaults)}")
    if unused:
        # Reported, not failed: a path the scenario did not reach may still be needed.
        warnings.warn(f"{title}: rules the operator never used here: " + "; ".join(map(str, unused)), stacklevel=2)


def test_cluster_role_covers_every_request_of_the_operator(harness: Harness):
    port, metrics_port = free_port(), free_port()
    rendered = render({"health": {"port": port}, "metrics": {"port": metrics_port}})
    assert not wildcards(rendered.objects)
    account = (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"])
    grants = grants_of(rendered.objects, account)
    # Cluster-wide, but for the Lease: the leader election's Role in the release namespace.
    assert grants and all(grant.namespace is None or grant.resource == "leases" for grant in grants)
    assert {grant.namespace for grant in grants if grant.resource == "leases"} == {rendered.namespace}

    harness.kill_operator()
    harness.server.requests.reset()
    start_operator_as_rendered(harness, rendered)
    records = run_releases(harness, ("default", "team-a"))

    # The probes' endpoint answers as the chart expects it to.
    probe = rendered.container["livenessProbe"]["httpGet"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}", timeout=10) as answer:
        assert answer.status == 200
    # So does the metrics port the Service points at, with the operator's own series.
    service = rendered.one("Service")["spec"]["ports"][0]
    assert service["targetPort"] == "metrics" and service["port"] == metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(exposition)
                if family.name.startswith(metrics.PREFIX) and not family.name.endswith("_created")}
    # Every series the operator declares, under the names the chart's alerts and dashboard use (counter
    # families drop _total; prometheus_client's _created timestamps read as families of their own); the
    # per-release ones went with the deleted releases, the others have samples.
    assert {name.removesuffix("_total") for name in metrics.METRIC_NAMES} == set(families)
    assert {name for name, family in families.items() if family.samples} >= {
        "modelrelease_reconcile_passes", "modelrelease_reconcile_duration_seconds", "modelrelease_releases",
        "modelrelease_training_job_duration_seconds", "modelrelease_api_requests"}

    accesses, unused = check_coverage(records, grants)
    report("cluster-wide (ClusterRole + the leader election's Role)", accesses, grants, unused)
    # It created its Lease (none was there), read it and renewed it, in the release namespace, by name.
    namespace, lease = lease_of(rendered)
    assert namespace == rendered.namespace
    assert lease_accesses(accesses) == {("create", namespace, None), ("get", namespace, lease),
                                        ("update", namespace, lease)}
    # The scenario did reach the paths a plain release leaves out.
    used = {(a.group, a.resource, a.verb) for a in accesses}
    assert {("", "secrets", "get"), ("batch", "jobs", "delete"), ("batch", "jobs", "get"), ("", "services", "get"),
            ("modelrelease.io", "modelreleases", "patch"), ("modelrelease.io", "modelreleases/status", "patch")} <= used
    # Cluster-wide, kopf never lists namespaces.
    assert not any(a.resource == "namespaces" for a in accesses)


def test_httproute_rules_cover_a_routed_release_and_are_needed(harness: Harness):
    """With trafficRouting.gatewayAPI.enabled, the grants cover a release routed by an HTTPRoute through
    its steps, its promotion and its deletion (the route restored); without it, they would not."""
    rendered = render({"health": {"port": free_port()}, "trafficRouting": {"gatewayAPI": {"enabled": True}}})
    grants = grants_of(rendered.objects, (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"]))
    harness.kill_operator()
    harness.server.requests.reset()
    start_operator_as_rendered(harness, rendered)
    store = Store(harness)
    store.create("gateway.networking.k8s.io/v1", "httproutes", "default", {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "digits-route"},
        "spec": {"rules": [{"backendRefs": [{"name": "digits-stable", "port": 8501}]}]}})
    spec = release_spec(harness.prometheus.url)
    spec["serving"] = {"replicas": 4, "trafficRouting": {"gatewayAPI": {"httpRoute": "digits-route"},
                                                        "scaleDownDelay": "1s"}}
    store.apply("default", "digits", spec)
    store.wait_phase("default", "digits", "Released", harness)
    store.delete("default", "digits")
    wait_for(lambda: store.release("default", "digits") is None, "default/digits gone")
    records = harness.server.requests.snapshot()

    accesses, unused = check_coverage(records, grants)
    report("cluster-wide, with Gateway API routing", accesses, grants, unused)
    routes = {(a.verb, a.namespace) for a in accesses if a.group == "gateway.networking.k8s.io"}
    assert routes == {("get", "default"), ("update", "default")}
    without = grants_of(render({"health": {"port": free_port()}}).objects,
                        (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"]))
    with pytest.raises(AssertionError, match="httproutes"):
        check_coverage(records, without)


def test_roles_cover_every_request_in_namespaced_mode(harness: Harness):
    rendered = render({"watchNamespaces": ["default", "team-a"], "health": {"port": free_port()},
                       "metrics": {"port": free_port()},
                       "rbac": {"clusterReadsInNamespacedMode": True}})
    assert not wildcards(rendered.objects)
    account = (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"])
    grants = grants_of(rendered.objects, account)
    observe = [grant for grant in grants if grant.namespace is None]

    harness.kill_operator()
    harness.server.requests.reset()
    start_operator_as_rendered(harness, rendered)
    records = run_releases(harness, ("default", "team-a"))

    accesses, unused = check_coverage(records, grants)
    # The two namespaces saw different scenarios: a rule counts as unused only if no namespace used it.
    used_somewhere = {(g.group, g.resource, g.verb) for g in grants if g not in unused}
    report("namespaced (Roles + the optional observe ClusterRole)", accesses, grants,
           [g for g in unused if (g.group, g.resource, g.verb) not in used_somewhere])
    # Everything the operator does to its objects stays inside the watched namespaces ...
    cluster_wide = {a for a in accesses if a.cluster_scoped and a.non_resource_url is None}
    assert {(a.group, a.resource, a.verb) for a in cluster_wide} <= {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch")}
    # ... and only kopf's observation needs the optional ClusterRole (without it kopf warns and carries on).
    assert all(any(g.allows(a) for g in observe) for a in cluster_wide)
    # ... but for the Lease, in the release namespace.
    assert {a.namespace for a in accesses if not a.cluster_scoped} == {"default", "team-a", rendered.namespace}
    assert {a.resource for a in accesses if a.namespace == rendered.namespace} == {"leases"}


def test_the_leader_election_role_covers_a_takeover_and_a_release(harness: Harness):
    """Two replicas with the rendered arguments: the first creates and holds the Lease, the second waits as a
    standby, takes the Lease over when the first dies (SIGKILL), and gives it back when stopped (SIGTERM)."""
    rendered = render({"replicas": 2, "leaderElection": {"leaseDuration": 3}, "metrics": {"enabled": False}})
    assert not wildcards(rendered.objects)
    account = (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"])
    grants = grants_of(rendered.objects, account)
    namespace, lease = lease_of(rendered)
    assert "--leader-election-lease-duration=3" in rendered.container["args"]

    def holder() -> str | None:
        found = harness.server.get_object("coordination.k8s.io/v1", "leases", namespace, lease)
        return ((found or {}).get("spec") or {}).get("holderIdentity") if found else None

    def args_on_port() -> list[str]:
        # Both pods run on this one machine: each its own liveness port, all else as rendered.
        return [f"--liveness=http://127.0.0.1:{free_port()}/healthz" if arg.startswith("--liveness=") else arg
                for arg in rendered.container["args"]]

    harness.kill_operator()
    harness.server.requests.reset()
    pods: dict[str, subprocess.Popen[bytes]] = {}
    try:
        pods["mro-a"] = start_pod(harness, rendered, "mro-a", args_on_port())
        wait_for(lambda: holder() == "mro-a", "the first pod to take the Lease")
        pods["mro-b"] = start_pod(harness, rendered, "mro-b", args_on_port())
        time.sleep(2)  # the standby's election loop runs: it reads the Lease and leaves it alone
        assert holder() == "mro-a"
        os.killpg(pods["mro-a"].pid, signal.SIGKILL)
        pods["mro-a"].wait()
        wait_for(lambda: holder() == "mro-b", "the standby to take the Lease over")
        pods["mro-b"].send_signal(signal.SIGTERM)
        pods["mro-b"].wait(timeout=60)
        assert holder() == ""  # released on a clean stop
    except BaseException:
        print(harness.operator_log()[-4000:])
        raise
    finally:
        for pod in pods.values():
            if pod.poll() is None:
                os.killpg(pod.pid, signal.SIGKILL)
                pod.wait()

    accesses, unused = check_coverage(harness.server.requests.snapshot(), grants)
    report("leader election (two replicas)", accesses, grants,
           [grant for grant in unused if grant.resource == "leases"])
    # Exactly the Role's rules were used: create (unnamed), and get and update of the one Lease by name.
    assert lease_accesses(accesses) == {("create", namespace, None), ("get", namespace, lease),
                                        ("update", namespace, lease)}
    assert not [grant for grant in unused if grant.resource == "leases"]
    # The Role grants nothing but that.
    role = next(obj for obj in rendered.of_kind("Role") if obj["metadata"]["name"].endswith("-leader-election"))
    assert {(g.resource, g.verb, g.resource_names) for g in grants if g.role.startswith("Role/")} == {
        ("leases", "get", (lease,)), ("leases", "update", (lease,)), ("leases", "create", ())}
    assert role["metadata"]["namespace"] == namespace == rendered.namespace


def test_rules_cover_a_multi_worker_release(harness: Harness):
    """A release whose stages train on two workers each: its Jobs' NetworkPolicies and headless Services are
    created under the rendered grants, and without the networkpolicies rule they would not be."""
    rendered = render({"health": {"port": free_port()}})
    grants = grants_of(rendered.objects, (rendered.namespace, rendered.one("ServiceAccount")["metadata"]["name"]))
    harness.kill_operator()
    harness.server.requests.reset()
    start_operator_as_rendered(harness, rendered)
    store = Store(harness)
    spec = release_spec(harness.prometheus.url)
    spec["training"]["workers"] = 2
    store.apply("default", "digits", spec)
    store.wait_phase("default", "digits", "Released", harness)
    records = harness.server.requests.snapshot()

    accesses, unused = check_coverage(records, grants)
    report("cluster-wide, two workers per stage", accesses, grants, unused)
    created = {(a.group, a.resource) for a in accesses if a.verb == "create"}
    assert {("networking.k8s.io", "networkpolicies"), ("", "services"), ("batch", "jobs")} <= created
    fenced = [g for g in grants if g.resource != "networkpolicies"]
    with pytest.raises(AssertionError, match="networkpolicies"):
        check_coverage(records, fenced)
