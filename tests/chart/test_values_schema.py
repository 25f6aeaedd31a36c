"""values.schema.json: unknown keys fail the install and the lint, at every level users set; the security
contexts are values whose defaults are exactly the hardened ones; names can be overridden; image by digest."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import CHART, HelmError, lint, render

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
KUBERNETES_SCHEMAS = (pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                      / "v1.33.0-local-strict")

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "privileged": False,
                      "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
# The objects whose keys are the user's own (labels, annotations, resource quantities) or Kubernetes
# objects passed through whole; every other object level refuses unknown keys.
OPEN = {
    "/global", "/serviceAccount/annotations", "/extraEnv[]/valueFrom", "/metrics/service/annotations",
    "/metrics/serviceMonitor/labels", "/metrics/serviceMonitor/relabelings[]",
    "/metrics/serviceMonitor/metricRelabelings[]", "/metrics/prometheusRule/labels",
    "/metrics/prometheusRule/additionalRuleLabels", "/metrics/dashboard/labels", "/metrics/dashboard/annotations",
    "/networkPolicy/egress/extraEgress[]", "/resources/requests", "/resources/limits", "/podAnnotations",
    "/podLabels", "/nodeSelector", "/affinity/nodeAffinity", "/affinity/podAffinity", "/affinity/podAntiAffinity",
    *(f"/networkPolicy/{peer}/{selector}/matchLabels" for peer in ("ingress", "egress/dns", "egress/prometheus")
      for selector in ("namespaceSelector", "podSelector")),
}


def resolve(schema: dict[str, Any], root: dict[str, Any] = SCHEMA) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        document, _, pointer = ref.partition("#")
        # Kubernetes' schemas point at "/api/_definitions.json#/$defs/...".
        target = json.loads((KUBERNETES_SCHEMAS / pathlib.Path(document).name).read_text()) if document else root
        for part in pointer.strip("/").split("/"):
            target = target[part]
        schema = target
    return schema


def object_levels(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every object schema below ``schema``, by the values path users write (list items as [])."""
    schema = resolve(schema)
    found = []
    if schema.get("type") == "object":
        found.append((path, schema))
        for key, sub in (schema.get("properties") or {}).items():
            found += object_levels(sub, f"{path}/{key}")
    if "items" in schema:
        found += object_levels(schema["items"], f"{path}[]")
    return found


# The schema.

def test_the_defaults_fit_the_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(DEFAULTS)


def test_every_object_level_refuses_unknown_keys():
    levels = object_levels(SCHEMA)
    open_levels = {path for path, schema in levels if schema.get("additionalProperties") is not False}
    # Free-form maps say what their values are (strings); pass-through Kubernetes objects are plain "object".
    assert open_levels == OPEN
    assert {"", "/image", "/metrics", "/metrics/serviceMonitor", "/securityContext/capabilities",
            "/podSecurityContext/seccompProfile", "/networkPolicy/egress/dns/podSelector",
            "/networkPolicy/egress/dns/podSelector/matchExpressions[]", "/tolerations[]"} <= {
        path for path, _ in levels} - open_levels


def test_the_schema_covers_every_default_value():
    levels = dict(object_levels(SCHEMA))

    def check(value: Any, path: str) -> None:
        if path in OPEN or not isinstance(value, dict):
            return
        for key, sub in value.items():
            assert key in levels[path]["properties"], f"{path}/{key}"
            check(sub, f"{path}/{key}")

    check(DEFAULTS, "")
    assert {"/metrics", "/networkPolicy", "/podSecurityContext", "/securityContext"} <= set(levels)


@pytest.mark.parametrize("values", [
    {"imagee": {"repository": "registry.example/mro"}},
    {"image": {"tagg": "0.2.0"}},
    {"metrics": {"serviceMonitor": {"enable": True}}},
    {"metrics": {"prometheusRule": {"enabled": True, "pausedFor": "30m", "for": "1h"}}},
    {"securityContext": {"readOnlyRootFileSystem": True}},
    {"podSecurityContext": {"seccompProfile": {"typ": "RuntimeDefault"}}},
    {"networkPolicy": {"egress": {"dns": {"podSelector": {"matchLabel": {"k8s-app": "kube-dns"}}}}}},
    {"resources": {"limit": {"cpu": "1"}}},
    {"tolerations": [{"key": "a", "operater": "Exists"}]},
], ids=lambda values: json.dumps(values)[:60])
def test_an_unknown_key_fails_the_install(values: dict[str, Any]):
    with pytest.raises(HelmError, match="additional propert"):
        render(values)


def test_helm_lint_fails_on_an_unknown_key(tmp_path: pathlib.Path):
    chart = tmp_path / "model-release-operator"
    shutil.copytree(CHART, chart)
    with (chart / "values.yaml").open("a") as values:
        values.write("\nimagee:\n  tag: 0.2.0\n")
    result = lint(chart)
    # helm-sdkpy returns Helm's messages without their text: the values file is the one in error.
    assert result["Errors"] and {"Severity": 3, "Path": "values.yaml"} in [
        {key: message[key] for key in ("Severity", "Path")} for message in result["Messages"]]


def test_the_security_contexts_offer_exactly_the_kubernetes_fields():
    for ours, theirs in (("podSecurityContext", "podsecuritycontext-v1.json"),
                         ("securityContext", "securitycontext-v1.json")):
        pairs = [(SCHEMA["properties"][ours], json.loads((KUBERNETES_SCHEMAS / theirs).read_text()), ours)]
        while pairs:
            mine, kubernetes, path = pairs.pop()
            mine, kubernetes = resolve(mine), resolve(kubernetes)
            assert set(mine["properties"]) == set(kubernetes["properties"]), path
            for key, sub in mine["properties"].items():
                if resolve(sub).get("type") == "object":
                    pairs.append((sub, kubernetes["properties"][key], f"{path}.{key}"))
                elif "items" in sub and resolve(sub["items"]).get("type") == "object":
                    pairs.append((sub["items"], kubernetes["properties"][key]["items"], f"{path}.{key}[]"))


# Security contexts.

def test_the_defaults_render_exactly_the_hardened_contexts():
    rendered = render()
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert DEFAULTS["podSecurityContext"] == pod["securityContext"] == POD_SECURITY
    assert DEFAULTS["securityContext"] == rendered.container["securityContext"] == CONTAINER_SECURITY


def test_a_security_context_value_changes_only_that_field():
    rendered = render({"securityContext": {"runAsUser": 20000}, "podSecurityContext": {"fsGroup": None}})
    assert rendered.container["securityContext"] == {**CONTAINER_SECURITY, "runAsUser": 20000}
    assert rendered.deployment["spec"]["template"]["spec"]["securityContext"] == {
        key: value for key, value in POD_SECURITY.items() if key != "fsGroup"}


# Names.

def names(rendered: Any) -> dict[str, str]:
    return {f"{obj['kind']}/{obj['metadata']['name']}": obj["metadata"]["name"] for obj in rendered.objects}


def test_fullname_override_names_every_object():
    rendered = render({"fullnameOverride": "mlops"})
    assert sorted(names(rendered)) == sorted([
        "ClusterRole/mlops", "ClusterRoleBinding/mlops", "ClusterRole/mlops-view", "ClusterRole/mlops-edit",
        "Deployment/mlops", "ServiceAccount/mlops", "Service/mlops-metrics", "Role/mlops-leader-election",
        "RoleBinding/mlops-leader-election"])
    assert rendered.deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mlops"


def test_name_override_changes_names_and_the_name_label():
    rendered = render({"nameOverride": "trainer-operator"}, release="ml")
    deployment = rendered.deployment
    assert deployment["metadata"]["name"] == "ml-trainer-operator"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "trainer-operator",
                                                             "app.kubernetes.io/instance": "ml"}
    service = rendered.one("Service")
    assert service["metadata"]["name"] == "ml-trainer-operator-metrics"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # A release name that holds the name is not repeated.
    assert render({"nameOverride": "ml"}, release="ml-prod").deployment["metadata"]["name"] == "ml-prod"


def test_long_names_stay_within_63_characters():
    rendered = render({"fullnameOverride": "a" * 63, "metrics": {"dashboard": {"enabled": True}}})
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63 or obj["kind"].startswith("Cluster"), obj["metadata"]["name"]
    assert rendered.one("Service")["metadata"]["name"] == "a" * 55 + "-metrics"
    assert rendered.one("ConfigMap")["metadata"]["name"] == "a" * 53 + "-dashboard"


# The image.

def test_a_digest_wins_over_the_tag():
    digest = "sha256:" + "0f" * 32
    rendered = render({"image": {"repository": "registry.example/mro", "tag": "0.1.0", "digest": digest}})
    assert rendered.container["image"] == f"registry.example/mro@{digest}"
    with pytest.raises(HelmError, match="digest"):
        render({"image": {"digest": "0f" * 32}})
