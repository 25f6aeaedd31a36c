"""Build the metrics provider for a release (auth Secrets read through the Kubernetes adapter)."""

from __future__ import annotations

from modelrelease.adapters.kubernetes import KubernetesSecretReader
from modelrelease.adapters.prometheus import MetricsProvider, PrometheusProvider
from modelrelease.api.spec import ModelReleaseSpec


def prometheus_for(spec: ModelReleaseSpec, namespace: str) -> MetricsProvider:
    if spec.analysis.prometheus is None:
        raise ValueError("analysis.prometheus is not set")
    return PrometheusProvider.from_spec(spec.analysis.prometheus, namespace, KubernetesSecretReader())
