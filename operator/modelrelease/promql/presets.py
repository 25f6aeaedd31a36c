"""Named analysis checks for the reference model server's metrics.

The server labels every series with ``model``, ``version`` and ``track``. Ratios whose numerator can be
an empty vector (no errors yet, no correct answer yet) fall back to 0 with ``or vector(0)``, so a
healthy canary reads 0 instead of "no data".
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
}
