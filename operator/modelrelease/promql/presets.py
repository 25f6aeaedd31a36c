"""Named analysis checks for the reference model server's metrics, and for TensorFlow Serving's.

The reference server labels every series with ``model``, ``version`` and ``track``. Ratios whose
numerator can be an empty vector (no errors yet, no correct answer yet) fall back to 0 with
``or vector(0)``, so a healthy canary reads 0 instead of "no data".

TensorFlow Serving (``tfserving-*``) names the model ``model_name``; ``version`` and ``track`` are added
by the scrape configuration from the pod's annotation and label (examples/tfserving-prometheus.yml).
"""

from __future__ import annotations

from dataclasses import dataclass

_SELECTOR = 'model="{{ model }}",version="{{ version }}",track="{{ track }}"'


@dataclass(frozen=True)
class Preset:
    query: str
    sample_query: str
    description: str
    max: float | None = None
    min_ratio: float | None = None
    max_ratio: float | None = None
    buckets_query: str | None = None
    """For a comparison with samples: histogram, the histogram's bucket counts by le over {{ interval }}."""


_REQUESTS = f"modelserver_requests_total{{{_SELECTOR}}}"
_FEEDBACK = f"modelserver_feedback_total{{{_SELECTOR}}}"

# TensorFlow Serving, as exported with --monitoring_config_file (prometheus_config { enable: true }):
# - :tensorflow:serving:request_count{model_name,status}: every REST and gRPC request, status the
#   canonical code ("OK", "INVALID_ARGUMENT", ...). Successful model status and metadata reads count too:
#   the readiness probes.
# - :tensorflow:serving:request_latency{model_name,API,entrypoint}: a histogram of successful requests
#   only, in microseconds. API is the REST verb as written in the URL ("predict") or the gRPC method
#   ("Predict"), and empty for status and metadata reads.
_TFS_SELECTOR = 'model_name="{{ model }}",version="{{ version }}",track="{{ track }}"'
_TFS_REQUESTS = f":tensorflow:serving:request_count{{{_TFS_SELECTOR}}}"
_TFS_READS = f':tensorflow:serving:request_latency_count{{{_TFS_SELECTOR},API=""}}'
"""Successful status and metadata reads (probes): not traffic, so left out of the error share."""
_TFS_PREDICT = f'{_TFS_SELECTOR},API=~"(?i)predict"'


def _tfs_traffic(function: str) -> str:
    """Requests other than successful status and metadata reads: every failure counts, and no probe."""
    return (f"sum({function}({_TFS_REQUESTS}[{{{{ interval }}}}]))"
            f" - (sum({function}({_TFS_READS}[{{{{ interval }}}}])) or vector(0))")


PRESETS: dict[str, Preset] = {
    "error-rate": Preset(
        query=(
            f'(sum(rate(modelserver_requests_total{{{_SELECTOR},code=~"5.."}}[{{{{ interval }}}}])) or vector(0))'
            f" / sum(rate({_REQUESTS}[{{{{ interval }}}}]))"
        ),
        sample_query=f"sum(increase({_REQUESTS}[{{{{ interval }}}}]))",
        description="share of predict requests answered 5xx",
        max=0.05,
    ),
    "latency-p99": Preset(
        query=(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(modelserver_request_duration_seconds_bucket{{{_SELECTOR}}}[{{{{ interval }}}}])))"
        ),
        sample_query=f"sum(increase({_REQUESTS}[{{{{ interval }}}}]))",
        description="99th percentile predict latency in seconds, relative to stable",
        max_ratio=1.2,
        buckets_query=(f"sum by (le) (increase(modelserver_request_duration_seconds_bucket{{{_SELECTOR}}}"
                       "[{{ interval }}]))"),
    ),
    "confidence": Preset(
        query=(
            f"sum(rate(modelserver_prediction_confidence_sum{{{_SELECTOR}}}[{{{{ interval }}}}]))"
            f" / sum(rate(modelserver_prediction_confidence_count{{{_SELECTOR}}}[{{{{ interval }}}}]))"
        ),
        sample_query=f"sum(increase(modelserver_prediction_confidence_count{{{_SELECTOR}}}[{{{{ interval }}}}]))",
        description="mean top-class probability of predictions, relative to stable",
        min_ratio=0.95,
        buckets_query=(f"sum by (le) (increase(modelserver_prediction_confidence_bucket{{{_SELECTOR}}}"
                       "[{{ interval }}]))"),
    ),
    "online-accuracy": Preset(
        query=(
            f'(sum(rate(modelserver_feedback_total{{{_SELECTOR},outcome="correct"}}[{{{{ interval }}}}])) or vector(0))'
            f" / sum(rate({_FEEDBACK}[{{{{ interval }}}}]))"
        ),
        sample_query=f"sum(increase({_FEEDBACK}[{{{{ interval }}}}]))",
        description="share of predictions that feedback labels confirmed, relative to stable",
        min_ratio=0.95,
    ),
    "tfserving-error-rate": Preset(
        query=(
            f'(sum(rate(:tensorflow:serving:request_count{{{_TFS_SELECTOR},status!="OK"}}[{{{{ interval }}}}]))'
            f" or vector(0)) / ({_tfs_traffic('rate')})"
        ),
        sample_query=_tfs_traffic("increase"),
        description="TensorFlow Serving: share of requests whose status is not OK (probes not counted)",
        max=0.05,
    ),
    "tfserving-latency-p99": Preset(
        query=(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(:tensorflow:serving:request_latency_bucket{{{_TFS_PREDICT}}}[{{{{ interval }}}}]))) / 1e6"
        ),
        sample_query=f"sum(increase(:tensorflow:serving:request_latency_count{{{_TFS_PREDICT}}}[{{{{ interval }}}}]))",
        description="TensorFlow Serving: 99th percentile predict latency in seconds, relative to stable",
        max_ratio=1.2,
        # The le bounds stay in microseconds (no PromQL can rescale a label): a comparison ranks the
        # observations and relates the medians to the stable's, so the unit cancels; its medians are in microseconds.
        buckets_query=(f"sum by (le) (increase(:tensorflow:serving:request_latency_bucket{{{_TFS_PREDICT}}}"
                       "[{{ interval }}]))"),
    ),
}
