"""The operator's metrics endpoint as the chart wires it (Deployment, Service, ServiceMonitor), and the
optional NetworkPolicy around the pod."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.chart.monitoring_crds import MONITORING_CRDS
from tests.chart.rendering import HelmError, Rendered, render

KUBERNETES_VERSION = "1.33"


@pytest.fixture(scope="module")
def default() -> Rendered:
    return render()


@pytest.fixture(scope="module")
def monitored() -> Rendered:
    return render({"metrics": {"port": 9100, "service": {"annotations": {"example.com/scrape": "true"}},
                               "serviceMonitor": {"enabled": True, "namespace": "monitoring",
                                                  "labels": {"release": "prometheus"}, "interval": "15s",
                                                  "scrapeTimeout": "10s",
                                                  "metricRelabelings": [{"action": "drop", "regex": "python_.*",
                                                                         "sourceLabels": ["__name__"]}]}}},
                  crds=MONITORING_CRDS)


@pytest.fixture(scope="module")
def isolated() -> Rendered:
    return render({"networkPolicy": {"enabled": True}})


def pod_labels(rendered: Rendered) -> dict[str, str]:
    labels: dict[str, str] = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def container_ports(rendered: Rendered) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in rendered.container["ports"]}


# Metrics.

def test_the_operator_serves_metrics_on_the_metrics_port(default: Rendered, monitored: Rendered):
    assert "--metrics-port=8081" in default.container["args"]
    assert container_ports(default) == {"health": 8080, "metrics": 8081}
    assert "--metrics-port=9100" in monitored.container["args"]
    assert container_ports(monitored)["metrics"] == 9100


def test_the_metrics_service_selects_the_operator_pod(default: Rendered, monitored: Rendered):
    for rendered in (default, monitored):
        service = rendered.one("Service")
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
        assert service["metadata"]["name"] == "mro-model-release-operator-metrics"
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"].items() <= pod_labels(rendered).items()
        [port] = service["spec"]["ports"]
        assert port == {"name": "metrics", "port": container_ports(rendered)["metrics"], "targetPort": "metrics",
                        "protocol": "TCP"}
    assert monitored.one("Service")["metadata"]["annotations"] == {"example.com/scrape": "true"}
    assert "ServiceMonitor" not in default.kinds
    assert "http://mro-model-release-operator-metrics.model-release-system.svc:8081/metrics" in default.notes


def test_the_service_monitor_scrapes_that_service(monitored: Rendered):
    monitor, service = monitored.one("ServiceMonitor"), monitored.one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    [endpoint] = spec["endpoints"]
    # honorLabels: the per-release series keep their own `namespace` label (the ModelRelease's).
    assert endpoint == {"port": service["spec"]["ports"][0]["name"], "path": "/metrics", "interval": "15s",
                        "scrapeTimeout": "10s", "honorLabels": True,
                        "metricRelabelings": [{"action": "drop", "regex": "python_.*", "sourceLabels": ["__name__"]}]}


def test_metrics_can_be_turned_off():
    rendered = render({"metrics": {"enabled": False}})
    assert "Service" not in rendered.kinds
    assert not any(arg.startswith("--metrics") for arg in rendered.container["args"])
    assert container_ports(rendered) == {"health": 8080}
    with pytest.raises(HelmError, match="needs metrics"):
        render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, crds=MONITORING_CRDS)


def test_the_metrics_and_health_ports_must_differ():
    with pytest.raises(HelmError, match="must differ"):
        render({"metrics": {"port": 8080}})


# The NetworkPolicy.

def rules_by_port(policy: dict[str, Any]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    return {tuple((port["port"], port["protocol"]) for port in rule["ports"]): rule.get("to", [])
            for rule in policy["spec"]["egress"]}


def test_no_network_policy_by_default(default: Rendered):
    assert "NetworkPolicy" not in default.kinds


def test_the_network_policy_isolates_the_pod(isolated: Rendered):
    policy = isolated.one("NetworkPolicy")
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels(isolated).items()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # In: only the health and metrics ports, which are the container's named ports.
    [ingress] = spec["ingress"]
    assert ingress["ports"] == [{"port": "health", "protocol": "TCP"}, {"port": "metrics", "protocol": "TCP"}]
    assert {port["port"] for port in ingress["ports"]} == set(container_ports(isolated))
    assert ingress["from"] == [{"namespaceSelector": {}, "podSelector": {}}]
    # Out: the API server (any address, its ports only), DNS, and Prometheus.
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert rules_by_port(policy) == {
        ((443, "TCP"), (6443, "TCP")): [],
        ((53, "UDP"), (53, "TCP")): [{"namespaceSelector": kube_system,
                                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        ((9090, "TCP"),): [{"namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
    }


def test_the_network_policy_is_configurable():
    extra = {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 4317, "protocol": "TCP"}]}
    rendered = render({"metrics": {"enabled": False}, "networkPolicy": {
        "enabled": True,
        "ingress": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        "egress": {"apiServer": {"cidrs": ["10.0.0.10/32"], "ports": [6443]},
                   "prometheus": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                                  "cidrs": ["198.51.100.7/32"], "ports": [9090, 443]},
                   "extraEgress": [extra]}}})
    policy = rendered.one("NetworkPolicy")
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    [ingress] = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "health", "protocol": "TCP"}]  # no metrics port without metrics
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    rules = rules_by_port(policy)
    assert rules[((6443, "TCP"),)] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    assert rules[((9090, "TCP"), (443, "TCP"))] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        {"ipBlock": {"cidr": "198.51.100.7/32"}}]
    assert policy["spec"]["egress"][-1] == extra
    without = render({"networkPolicy": {"enabled": True, "egress": {"prometheus": {"enabled": False}}}})
    assert ((9090, "TCP"),) not in rules_by_port(without.one("NetworkPolicy"))
