"""Stand-ins for prometheus-operator's ServiceMonitor and PrometheusRule CRDs, for the embedded API server.

Helm refuses to install an object whose kind the cluster does not serve, so the renders that turn the
ServiceMonitor or PrometheusRule on create these first. They only make the kinds exist (the schema keeps
every field); the tests check the objects' fields themselves, and promtool checks the rules.
"""

from __future__ import annotations

from typing import Any

GROUP = "monitoring.coreos.com"


def crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }


MONITORING_CRDS = [crd("ServiceMonitor", "servicemonitors"), crd("PrometheusRule", "prometheusrules")]
