"""Leader election in the chart: the operator's arguments and env, the Deployment's strategy, the Lease's
Role, more than one replica, the PodDisruptionBudget and the pods' spread over nodes.

test_rbac_coverage.py runs the real operator with these arguments and checks its Lease requests against
the rendered Role.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.rendering import HelmError, Rendered, render

KUBERNETES_VERSION = "1.33"
FULLNAME = "mro-model-release-operator"
DOWNWARD_API = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]
SPREAD = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
    "topologyKey": "kubernetes.io/hostname",
    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "model-release-operator",
                                      "app.kubernetes.io/instance": "mro"}}}}]}


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


@pytest.fixture(scope="module")
def without() -> Rendered:
    return render({"leaderElection": {"enabled": False}})


@pytest.fixture(scope="module")
def three() -> Rendered:
    return render({"replicas": 3, "podDisruptionBudget": {"enabled": True},
                   "leaderElection": {"leaseName": "mro-leader", "leaseDuration": 30}},
                  release="mro", namespace="ops")


def election_args(rendered: Rendered) -> list[str]:
    return [arg for arg in rendered.container["args"] if arg.startswith("--leader-elect")]


def leader_election_role(rendered: Rendered) -> dict[str, Any]:
    found = [role for role in rendered.of_kind("Role") if role["metadata"]["name"].endswith("-leader-election")]
    assert len(found) == 1
    return found[0]


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.deployment["spec"]["template"]["spec"]
    return spec


def test_on_by_default_in_the_release_namespace(default: Rendered):
    assert election_args(default) == ["--leader-elect", "--leader-election-namespace=model-release-system",
                                      f"--leader-election-id={FULLNAME}", "--leader-election-lease-duration=15"]
    # The identity is the pod's name; POD_NAMESPACE is the operator's fallback for the Lease's namespace.
    assert default.container["env"] == DOWNWARD_API


def test_a_rolling_update_with_leader_election(default: Rendered):
    # The new pod waits as a standby until the old one, stopped once the new one is ready, hands the
    # Lease over on SIGTERM: never two writers, and no gap longer than one election step.
    assert default.deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    # The standby is ready as soon as kopf started (the probes' /healthz does not wait for the Lease), and it
    # has the grace period to hand the Lease over.
    assert pod_spec(default)["terminationGracePeriodSeconds"] >= 10


def test_the_lease_role_is_exactly_get_update_by_name_and_create(default: Rendered):
    role = leader_election_role(default)
    assert role["metadata"] == {**role["metadata"], "name": f"{FULLNAME}-leader-election",
                                "namespace": "model-release-system"}
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [FULLNAME],
         "verbs": ["get", "update"]},
        # create cannot be restricted by resourceNames (its URL names no object).
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = next(b for b in default.of_kind("RoleBinding") if b["metadata"]["name"] == f"{FULLNAME}-leader-election")
    assert binding["metadata"]["namespace"] == "model-release-system"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": f"{FULLNAME}-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": "model-release-system"}]
    # Leases appear nowhere else: no list, watch, patch or delete, and nothing cluster-wide.
    leases = [(obj["kind"], obj["metadata"]["name"]) for obj in default.of_kind("Role") + default.of_kind("ClusterRole")
              for rule in obj.get("rules") or [] if "leases" in rule["resources"]]
    assert leases == [("Role", f"{FULLNAME}-leader-election")] * 2


def test_the_lease_role_follows_the_lease_name_and_namespace(three: Rendered):
    assert election_args(three) == ["--leader-elect", "--leader-election-namespace=ops",
                                    "--leader-election-id=mro-leader", "--leader-election-lease-duration=30"]
    role = leader_election_role(three)
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"][0]["resourceNames"] == ["mro-leader"]
    assert "kubectl -n ops get lease mro-leader" in three.notes and "3 replicas" in three.notes


def test_in_namespaced_mode_the_lease_role_stays_in_the_release_namespace():
    rendered = render({"watchNamespaces": ["team-a", "model-release-system"]})
    # The watched namespace that is also the release namespace gets both Roles, under different names.
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in rendered.of_kind("Role")) == [
        ("model-release-system", FULLNAME), ("model-release-system", f"{FULLNAME}-leader-election"),
        ("team-a", FULLNAME)]
    assert "--leader-election-namespace=model-release-system" in election_args(rendered)


def test_off_recreate_no_flags_no_role(without: Rendered):
    assert election_args(without) == []
    assert without.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not without.of_kind("Role") and not without.of_kind("RoleBinding")
    assert without.container["env"] == DOWNWARD_API  # harmless without leader election
    assert "without leader election" in without.notes


def test_no_lease_role_without_rbac():
    rendered = render({"rbac": {"create": False}})
    assert election_args(rendered) and not rendered.of_kind("Role")


@pytest.mark.parametrize("replicas", [2, 5])
def test_more_than_one_replica_without_leader_election_fails(replicas: int):
    with pytest.raises(HelmError, match=r"replicas > 1 requires leaderElection\.enabled"):
        render({"replicas": replicas, "leaderElection": {"enabled": False}})


def test_zero_or_one_replica_may_run_without_leader_election():
    assert render({"replicas": 0, "leaderElection": {"enabled": False}}).deployment["spec"]["replicas"] == 0


def test_several_replicas_spread_over_nodes(three: Rendered, default: Rendered):
    assert three.deployment["spec"]["replicas"] == 3
    assert pod_spec(three)["affinity"] == {"podAntiAffinity": SPREAD}
    assert three.deployment["spec"]["selector"]["matchLabels"] == SPREAD[
        "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert "affinity" not in pod_spec(default)  # one replica: nothing to spread


def test_the_spread_keeps_the_users_affinity():
    node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}
    merged = render({"replicas": 2, "affinity": {"nodeAffinity": node}})
    assert pod_spec(merged)["affinity"] == {"nodeAffinity": node, "podAntiAffinity": SPREAD}
    own = {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "topology.kubernetes.io/zone",
                                                              "labelSelector": {"matchLabels": {"x": "y"}}}]}
    assert pod_spec(render({"replicas": 2, "affinity": {"podAntiAffinity": own}}))["affinity"] == {
        "podAntiAffinity": own}
    # {} opts out of the spread.
    assert pod_spec(render({"replicas": 2, "affinity": {"podAntiAffinity": {}}}))["affinity"] == {
        "podAntiAffinity": {}}


def test_pod_disruption_budget(three: Rendered, default: Rendered):
    assert "PodDisruptionBudget" not in default.kinds
    budget = three.one("PodDisruptionBudget")
    assert budget["metadata"]["name"] == FULLNAME and budget["metadata"]["namespace"] == "ops"
    assert budget["spec"] == {"minAvailable": 1,
                              "selector": {"matchLabels": three.deployment["spec"]["selector"]["matchLabels"]}}


def test_every_object_with_several_replicas_is_valid(three: Rendered, without: Rendered):
    for obj in three.objects + without.objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert {"PodDisruptionBudget", "Role", "RoleBinding"} <= set(three.kinds)


@pytest.mark.parametrize("values", [
    {"leaderElection": {"leaseDuration": 0}},
    {"leaderElection": {"leaseDuration": "15"}},
    {"leaderElection": {"leaseName": "Not_A_Name"}},
    {"leaderElection": {"enabled": "yes"}},
    {"leaderElection": {"renewDeadline": 10}},
    {"podDisruptionBudget": {"minAvailable": 2}},
    {"replicas": -1},
])
def test_the_schema_refuses(values: dict[str, Any]):
    with pytest.raises(HelmError):
        render(values)
