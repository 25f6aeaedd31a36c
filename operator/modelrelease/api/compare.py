"""A check's statistical comparison of the canary with the stable: what a user asks for.

The comparison itself lives in ``core.comparison``; this is the wire model, its defaults and the
validation that needs no Prometheus (a query that can never yield samples is refused here).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from modelrelease.api.base import Duration, WireModel

CompareTest = Literal["mann-whitney", "proportions"]
Direction = Literal["increase", "decrease", "either"]
COMPARE_TESTS: tuple[str, ...] = ("mann-whitney", "proportions")
DIRECTIONS: tuple[str, ...] = ("increase", "decrease", "either")


class CompareSpec(WireModel):
    """Compare the canary with the stable on samples, instead of (or besides) the check's bounds."""

    test: CompareTest
    """mann-whitney: the check's query is read as a range over the window, and every value of every
    series at every step is one sample (per pod or per scrape); the canary's samples are compared with
    the stable's by a Mann-Whitney U test. proportions: the check's query is a rate (events / trials,
    between 0 and 1) and its sample query counts the trials, both over the window ({{ interval }} is the
    window); the two rates are compared by Fisher's exact test."""
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.99
    """How sure the comparison must be of a regression to fail the check, above 0 and below 1, over all
    runs of one canary version (each run spends part of 1 - confidence; see docs/analysis.md).
    Default 0.99."""
    min_effect: Annotated[float, Field(gt=0, le=10)] | None = None
    """The smallest change counted as a regression. mann-whitney: relative to the stable's median, e.g.
    0.1 for 10% (default 0.1). proportions: in points of the rate, e.g. 0.02 for 2 points, 1% to 3%
    errors (default 0.01). A smaller change, however certain, passes; and the check waits for enough
    samples to see a change of this size before it passes."""
    direction: Direction = "either"
    """Which change is a regression: increase (latency, errors), decrease (accuracy, confidence), or
    either. Default either."""
    window: Duration = "10m"
    """How far back the samples reach, a Go duration of at least the analysis interval; never before the
    canary version started serving. Default 10m."""
    samples: Literal["values", "histogram"] = "values"
    """mann-whitney: what a sample is. values: every value of the query's range (see step). histogram:
    every observation of a histogram over the window, at its bucket's upper bound; the check's query (or
    its preset's bucket query: latency-p99, confidence, tfserving-latency-p99) returns the buckets' counts by le,
    e.g.
    sum by (le) (increase(x_bucket{track="{{ track }}"}[{{ interval }}])) with {{ interval }} the window.
    Default values."""
    step: Duration | None = None
    """mann-whitney: the resolution of the range query, a Go duration; default the analysis interval.
    Samples closer than the range of the query's rate() share data and overstate the evidence: for more
    samples, return one series per pod (e.g. sum by (le, pod) (...)) rather than a shorter step."""


    @property
    def effect_floor(self) -> float:
        """minEffect, or the test's default."""
        if self.min_effect is not None:
            return self.min_effect
        return 0.1 if self.test == "mann-whitney" else 0.01


# A selector ({...}) or a metric name: what a query needs to yield samples. Functions and keywords
# followed by "(" are not metric names; neither are grouping labels in by/without (...).
_SELECTOR = re.compile(r"\{")
_IDENTIFIER = re.compile(r"(?<![\w:.\"'])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?")
_NOT_METRICS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2",
})


def sample_query_problem(query: str) -> str | None:
    """Why ``query`` can never yield samples to compare (a scalar expression), or None."""
    text = re.sub(r"\{\{.*?\}\}", "x", query)
    text = re.sub(r"\"[^\"]*\"|'[^']*'", "''", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    stripped = text.strip()
    if stripped.startswith("scalar(") or stripped.startswith("time("):
        return "the query returns a scalar, which has no samples per series; return an instant vector"
    if _SELECTOR.search(text):
        return None
    grouping = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    for match in _IDENTIFIER.finditer(grouping):
        name, call = match.group(1), match.group(2)
        if not call and name.lower() not in _NOT_METRICS:
            return None
    return "the query selects no metric (no series name or {…} selector), so it yields no samples to compare"


def compare_problem(compare: CompareSpec, query: str, sample_query: str | None, preset: str | None = None,
                    buckets_query: str | None = None) -> str | None:
    """Why a check's queries cannot feed its comparison, or None. ``query`` and ``sample_query`` are the
    check's own or its preset's templates; ``buckets_query`` the preset's bucket query, if any."""
    if compare.samples == "histogram":
        if compare.test != "mann-whitney":
            return "compare.samples histogram is for test mann-whitney; proportions compare rates of counts"
        if preset is not None and buckets_query is None:
            return (f"compare.samples histogram: preset {preset} reads no histogram; use it with latency-p99, "
                    "confidence or tfserving-latency-p99, or give a query returning bucket counts by le")
        if preset is None and "le" not in query:
            return ("compare.samples histogram: the query must return a histogram's bucket counts by le, e.g. "
                    "sum by (le) (increase(x_bucket{track=\"{{ track }}\"}[{{ interval }}]))")
    if compare.test == "proportions" and not sample_query:
        return ("compare.test proportions needs the trials counted: set sampleQuery (e.g. "
                "sum(increase(requests_total{track=\"{{ track }}\"}[{{ interval }}]))) or use a preset")
    problem = sample_query_problem(query)
    return f"compare: {problem}" if problem else None
