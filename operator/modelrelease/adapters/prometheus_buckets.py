"""What an instant query for a histogram's buckets means: cumulative counts by ``le``, or an error.

A comparison with ``samples: histogram`` asks for ``sum by (le) (increase(x_bucket[window]))`` per
track, so each observation the window saw (one request's latency, one prediction's confidence) becomes
one sample at its bucket's upper bound. The answer is a vector with one series per ``le``. Pure, like
``prometheus_answers``: nothing an answer holds can make it raise.
"""

from __future__ import annotations

import math
from typing import Any

from modelrelease.adapters.prometheus_answers import (
    QueryResult,
    format_labels,
    labels_of,
    sample_value,
    shorten,
    unreadable_sample,
)

__all__ = ["MAX_BUCKETS", "classify_buckets_data"]

MAX_BUCKETS = 1000
"""The most buckets one answer may hold; more is a query that kept other labels than ``le``."""


def classify_buckets_data(result_type: Any, result: Any) -> QueryResult:
    """The (upper bound, cumulative count) pairs of a successful instant query, or why there are none."""
    if result_type != "vector":
        named = result_type if isinstance(result_type, str) and result_type else "missing"
        return QueryResult.failed("shape", f"the bucket query returns a {shorten(named)[:40]} result, not a "
                                  "vector of buckets; return sum by (le) (increase(<name>_bucket[...]))")
    if not isinstance(result, list):
        return QueryResult.failed("shape", "the vector's result is not a list of series")
    if len(result) > MAX_BUCKETS:
        return QueryResult.failed("shape", f"the bucket query returns {len(result)} series, more than "
                                  f"{MAX_BUCKETS}; aggregate them by le only: sum by (le) (...)")
    buckets: dict[float, float] = {}
    for series in result:
        labels = labels_of(series)
        bound = _bound(labels.get("le"))
        if bound is None:
            return QueryResult.failed("shape", f"{format_labels(labels)} has no numeric le label: the query must "
                                      "return a histogram's buckets, e.g. sum by (le) (increase(x_bucket[...]))")
        if bound in buckets:
            return QueryResult.failed("shape", f"the bucket le={labels['le']} comes in several series; "
                                      "aggregate them by le only: sum by (le) (...)")
        value = sample_value(series.get("value") if isinstance(series, dict) else None)
        if value is None:
            return unreadable_sample(series.get("value") if isinstance(series, dict) else series)
        # A NaN count (no traffic in a ratio, a broken exporter) is no observation.
        buckets[bound] = value if math.isfinite(value) and value > 0 else 0.0
    return QueryResult(buckets=tuple(sorted(buckets.items())))


def _bound(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        bound = float(text)
    except ValueError:
        return None
    return None if math.isnan(bound) else bound
