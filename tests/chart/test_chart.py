"""The Helm chart, rendered by Helm itself: valid objects, hardened pod, least-privilege RBAC, options."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelrelease.api.crd import build_crd
from tests.chart.rendering import CHART, REPO, HelmError, Rendered, lint, render

KUBERNETES_VERSION = "1.33"
WATCHED = ["team-a", "team-b"]
AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


@pytest.fixture(scope="module")
def namespaced() -> Rendered:
    return render({"watchNamespaces": WATCHED})


@pytest.fixture(scope="module")
def namespaced_with_reads() -> Rendered:
    return render({"watchNamespaces": WATCHED, "rbac": {"clusterReadsInNamespacedMode": True}})


@pytest.fixture(scope="module")
def customised() -> Rendered:
    return render({
        "image": {"repository": "registry.example/mro", "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "pull"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}},
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "logFormat": "plain",
        "replicas": 0,
        "serviceAccount": {"create": False, "name": "existing-account"},
        "rbac": {"readSecrets": True, "secretNames": ["prometheus-token"]},
        "podAnnotations": {"example.com/team": "ml"},
        "priorityClassName": "system-cluster-critical",
    }, release="custom", namespace="ops")


def operator_cluster_role(rendered: Rendered) -> dict[str, Any]:
    """The one ClusterRole for the operator; the aggregated ones are for people (test_user_rbac.py)."""
    found = [obj for obj in rendered.of_kind("ClusterRole")
             if not any(key.startswith(AGGREGATE) for key in obj["metadata"].get("labels") or {})]
    assert len(found) == 1, [obj["metadata"]["name"] for obj in found]
    return found[0]


def aggregated_role_names(rendered: Rendered) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in rendered.of_kind("ClusterRole")
                  if any(key.startswith(AGGREGATE) for key in obj["metadata"].get("labels") or {}))


def rules_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj.get("rules") or []


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


# Metadata and the CRD.

def test_chart_metadata_follows_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "model-release-operator"
    assert chart["appVersion"] == project["version"] == "0.1.0"


def test_helm_lint_finds_nothing_to_warn_about():
    result = lint()
    assert result["TotalChartsLinted"] == 1 and not result["Errors"]
    # Helm's severities: 1 info (e.g. "icon is recommended"), 2 warning, 3 error.
    assert [m for m in result["Messages"] if m["Severity"] >= 2] == []


def test_chart_crd_is_the_generated_one(default: Rendered):
    copied = (CHART / "crds" / "modelrelease.io_modelreleases.yaml").read_text()
    assert copied == (REPO / "crds" / "modelrelease.io_modelreleases.yaml").read_text(), \
        "charts/model-release-operator/crds/ is stale: copy crds/modelrelease.io_modelreleases.yaml over it"
    assert yaml.safe_load(copied) == build_crd()
    # Helm created it from crds/ before the templates.
    assert [crd["metadata"]["name"] for crd in default.crds] == ["modelreleases.modelrelease.io"]
    assert default.crds[0]["spec"] == yaml.safe_load(copied)["spec"]


# Every object is valid Kubernetes, strictly.

def test_every_rendered_object_is_valid(default: Rendered, namespaced: Rendered, namespaced_with_reads: Rendered,
                                        customised: Rendered):
    crd = yaml.safe_load((CHART / "crds" / "modelrelease.io_modelreleases.yaml").read_text())
    objects = [crd, *default.objects, *namespaced.objects, *namespaced_with_reads.objects, *customised.objects]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    # None skipped: the CRD and each render's objects, two of them the aggregated roles for people and two
    # the leader election's Role and RoleBinding.
    assert len(objects) == 1 + (5 + 2 + 2) + (7 + 2 + 2) + (9 + 2 + 2) + (4 + 2 + 2)


def test_strict_validation_would_catch_a_typo(default: Rendered):
    broken = yaml.safe_load(yaml.safe_dump(default.deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# The pod.

def test_pod_is_hardened(default: Rendered):
    pod = default.deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is True
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    container = default.container
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable path is an emptyDir at /tmp.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_service_account_token_only_in_the_operator_pod(default: Rendered):
    account = default.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert default.deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_one_replica_with_leader_election(default: Rendered):
    spec = default.deployment["spec"]
    # The Lease makes a rolling update safe (test_leader_election.py has the details).
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "RollingUpdate"
    args = default.container["args"]
    assert "--leader-elect" in args and not any(arg.startswith("--peering") for arg in args)
    assert default.container["image"] == "ghcr.io/modelrelease/operator:0.1.0"


def test_more_than_one_replica_is_refused_without_leader_election():
    with pytest.raises(HelmError, match=r"replicas > 1 requires leaderElection\.enabled"):
        render({"replicas": 2, "leaderElection": {"enabled": False}})


def test_operator_arguments_and_probes(default: Rendered):
    container = default.container
    assert container["args"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=8081",
                                 "--log-format=json", "--leader-elect",
                                 "--leader-election-namespace=model-release-system",
                                 "--leader-election-id=mro-model-release-operator",
                                 "--leader-election-lease-duration=15"]
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 8081, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "command" not in container  # the image's ENTRYPOINT is `modelrelease run`


# RBAC.

def test_cluster_wide_rbac(default: Rendered):
    assert default.kinds == ["ClusterRole"] * 3 + ["ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                                                   "Service", "ServiceAccount"]
    assert aggregated_role_names(default) == ["mro-model-release-operator-edit", "mro-model-release-operator-view"]
    role, binding = operator_cluster_role(default), default.one("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    account = default.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    assert grants(rules_of(role)) == {
        ("modelrelease.io", "modelreleases", verb) for verb in ("get", "list", "watch", "patch")
    } | {("modelrelease.io", "modelreleases/status", "patch")} | {
        ("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")
    } | {("", "pods", "list"), ("", "pods", "watch")} | {
        ("apps", "deployments", verb) for verb in ("create", "get", "list", "watch", "patch")
    } | {("", "services", verb) for verb in ("create", "get", "list", "watch")} | {
        ("networking.k8s.io", "networkpolicies", "create"), ("networking.k8s.io", "networkpolicies", "get"),
        ("", "events", "create"), ("", "secrets", "get"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }


def test_no_wildcards_no_escalation(default: Rendered, namespaced: Rendered, namespaced_with_reads: Rendered,
                                    customised: Rendered):
    dangerous = {"escalate", "bind", "impersonate", "*"}
    for rendered in (default, namespaced, namespaced_with_reads, customised):
        for obj in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
            for rule in rules_of(obj):
                assert "nonResourceURLs" not in rule
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{obj['metadata']['name']}: wildcard in {field}"
                assert not dangerous & set(rule["verbs"])
                assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & set(rule["resources"])
                # Secrets: read one by name, never list or watch (that would read them all).
                if "secrets" in rule["resources"]:
                    assert rule["verbs"] == ["get"]


def test_watch_namespaces_use_roles_instead_of_a_cluster_role(default: Rendered, namespaced: Rendered):
    assert namespaced.kinds == ["ClusterRole", "ClusterRole", "Deployment", "Role", "Role", "Role", "RoleBinding",
                                "RoleBinding", "RoleBinding", "Service", "ServiceAccount"]
    # Cluster-scoped, only the aggregated roles for people, which grant the operator nothing.
    assert len(aggregated_role_names(namespaced)) == 2 and not namespaced.of_kind("ClusterRoleBinding")
    # The third Role is the leader election's, in the release namespace (test_leader_election.py).
    roles = {role["metadata"]["namespace"]: role for role in namespaced.of_kind("Role")
             if role["metadata"]["name"] == "mro-model-release-operator"}
    assert sorted(roles) == WATCHED
    cluster_grants = grants(rules_of(operator_cluster_role(default)))
    for namespace, role in roles.items():
        # The same rules as cluster-wide, less the cluster-scoped CRD observation.
        assert grants(rules_of(role)) == {g for g in cluster_grants if g[0] != "apiextensions.k8s.io"}
        binding = next(b for b in namespaced.of_kind("RoleBinding") if b["metadata"]["namespace"] == namespace
                       and b["metadata"]["name"] == "mro-model-release-operator")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mro-model-release-operator",
                                        "namespace": "model-release-system"}]
    args = namespaced.container["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_namespaced_mode_may_add_read_only_cluster_observation(namespaced_with_reads: Rendered):
    assert len(namespaced_with_reads.of_kind("Role")) == 2 + 1  # + the leader election's
    observe = operator_cluster_role(namespaced_with_reads)
    assert grants(rules_of(observe)) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
    }
    binding = namespaced_with_reads.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == observe["metadata"]["name"]


def test_secrets_grant_is_optional_and_can_name_secrets(customised: Rendered):
    without = render({"rbac": {"readSecrets": False}})
    assert all("secrets" not in rule["resources"] for rule in rules_of(operator_cluster_role(without)))
    secrets = [rule for rule in rules_of(operator_cluster_role(customised)) if "secrets" in rule["resources"]]
    assert secrets == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["prometheus-token"],
                        "verbs": ["get"]}]


def test_httproutes_are_granted_only_with_gateway_api_routing(default: Rendered, namespaced: Rendered):
    routes = {"gateway.networking.k8s.io"}
    # Off by default: no grant on any Gateway API kind (the default's exact rules are pinned above).
    for rendered in (default, namespaced):
        for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
            assert not any(routes & set(rule["apiGroups"]) for rule in rules_of(role))
    enabled = {"trafficRouting": {"gatewayAPI": {"enabled": True}}}
    cluster_wide = operator_cluster_role(render(enabled))
    # Read and replace the user's route; never create, list, watch, patch or delete it.
    assert grants(rules_of(cluster_wide)) - grants(rules_of(operator_cluster_role(default))) == {
        ("gateway.networking.k8s.io", "httproutes", "get"), ("gateway.networking.k8s.io", "httproutes", "update")}
    per_namespace = [role for role in render({**enabled, "watchNamespaces": WATCHED}).of_kind("Role")
                     if role["metadata"]["name"] == "mro-model-release-operator"]
    assert sorted(role["metadata"]["namespace"] for role in per_namespace) == WATCHED
    for role in per_namespace:
        assert ("gateway.networking.k8s.io", "httproutes", "update") in grants(rules_of(role))
    with pytest.raises(HelmError, match="'/trafficRouting/gatewayAPI/enabled': got string, want boolean"):
        render({"trafficRouting": {"gatewayAPI": {"enabled": "yes"}}})


def test_no_rbac_objects_when_disabled():
    rendered = render({"rbac": {"create": False}})
    assert rendered.kinds == ["Deployment", "Service", "ServiceAccount"]


# Values.

def test_values_reach_the_pod(customised: Rendered):
    assert "ServiceAccount" not in customised.kinds  # an existing account is used
    deployment = customised.deployment
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 0
    assert pod["serviceAccountName"] == "existing-account"
    assert customised.one("ClusterRoleBinding")["subjects"][0]["name"] == "existing-account"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["affinity"]["nodeAffinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "ml"}
    container = customised.container
    assert container["image"] == "registry.example/mro@sha256:" + "ab" * 32
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    # extraEnv after the pod's own name and namespace (the leader election's identity).
    assert [env["name"] for env in container["env"]] == ["POD_NAME", "POD_NAMESPACE", "TZ"]
    assert container["env"][-1] == {"name": "TZ", "value": "UTC"}
    assert "--log-format=plain" in container["args"] and container["args"][-1] == "--verbose"
    assert customised.one("RoleBinding")["subjects"][0]["name"] == "existing-account"


def test_notes_say_how_to_upgrade_the_crd(default: Rendered, namespaced: Rendered):
    assert "kubectl apply --server-side -f" in default.notes and "every namespace" in default.notes
    assert "team-a, team-b" in namespaced.notes


# The image the chart runs.

def test_image_matches_the_pod_settings(default: Rendered):
    dockerfile = (REPO / "operator.Dockerfile").read_text()
    instructions = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    # python:3.11-slim, pinned to a patch release (never a moving tag such as 3.11-slim or latest).
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base) for base in bases), bases
    assert 'ENTRYPOINT ["modelrelease", "run"]' in instructions
    uid = default.deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"USER {uid}:{uid}" in instructions
    assert "trainer" not in " ".join(line for line in instructions if "pip install" in line)
