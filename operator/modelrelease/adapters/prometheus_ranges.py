"""What an answer from Prometheus' /api/v1/query_range means: samples to compare, or an error in words.

A range answer is a matrix: series, each with values at steps. For a statistical comparison every value
of every series at every step is one sample (per pod, per scrape), so the series are flattened, not
picked from. NaN and ±Inf are no measurements (a division by zero traffic, a broken exporter) and are
dropped; an empty matrix is zero samples, which the comparison reads as "not enough yet", not as an
error. Pure, like ``prometheus_answers``: nothing an answer holds can make it raise.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from modelrelease.adapters.prometheus_answers import (
    QueryResult,
    format_labels,
    labels_of,
    sample_value,
    shorten,
    unreadable_sample,
)

__all__ = ["MAX_RANGE_POINTS", "MAX_RANGE_SERIES", "classify_range_data", "range_problem", "seconds_of"]

MAX_RANGE_SERIES = 1000
"""The most series one range answer may hold. A comparison reads a few series per track (one per pod at
most); more is a query that forgot to aggregate, and its samples would mix unrelated things."""
MAX_RANGE_POINTS = 11_000
"""Prometheus' own limit of points per series in one range query; asked for more, it refuses."""


def seconds_of(time: float | datetime) -> float:
    return time.timestamp() if isinstance(time, datetime) else float(time)


def range_problem(start: float, end: float, step_seconds: float) -> str | None:
    """Why Prometheus would refuse this range, said in the spec's terms, or None. Checked before asking,
    because Prometheus' own answer (400, bad_data) would read as a wrong query."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return "the range's start and end must be finite times"
    if end < start:
        return f"the range ends at {end:.3f} before it starts at {start:.3f}; give an end after the start"
    if not (math.isfinite(step_seconds) and step_seconds > 0):
        return f"the range's step is {step_seconds:g}s; it must be positive: set compare.step, e.g. 15s"
    points = math.floor((end - start) / step_seconds) + 1
    if points > MAX_RANGE_POINTS:
        return (
            f"the range has {points} steps per series, more than Prometheus' {MAX_RANGE_POINTS}: "
            "raise compare.step or shorten compare.window"
        )
    return None


def classify_range_data(result_type: Any, result: Any) -> QueryResult:
    """Every finite value of a successful range query's matrix, or why it has none to give."""
    if result_type != "matrix":
        named = result_type if isinstance(result_type, str) and result_type else "missing"
        return QueryResult.failed(
            "shape", f"the range query returns a {shorten(named)[:40]} result, not a matrix of series")
    if not isinstance(result, list):
        kind = "missing" if result is None else f"a JSON {type(result).__name__}"
        return QueryResult.failed("shape", f"the matrix's result is {kind}, not a list of series")
    if len(result) > MAX_RANGE_SERIES:
        return QueryResult.failed("shape", _too_many_series(result))
    samples: list[float] = []
    for series in result:
        if not isinstance(series, dict):
            return QueryResult.failed("shape", "a series of the matrix is not an object")
        values = series.get("values")
        if values is None and "histograms" in series:
            return QueryResult.failed(
                "shape", f"{format_labels(labels_of(series))} is a native histogram, not numbers; "
                "query a quantile of it, e.g. with histogram_quantile()")
        if not isinstance(values, list):
            return QueryResult.failed("shape", f"{format_labels(labels_of(series))} has no list of values")
        for sample in values:
            value = sample_value(sample)
            if value is None:
                return unreadable_sample(sample)
            if math.isfinite(value):
                samples.append(value)
    return QueryResult.of_samples(samples)


def _too_many_series(result: list[Any]) -> str:
    first = format_labels(labels_of(result[0]))
    return (
        f"the range query returns {len(result)} series, more than {MAX_RANGE_SERIES} to compare (e.g. {first}); "
        "aggregate them, e.g. by pod: sum by (pod) (...)"
    )
