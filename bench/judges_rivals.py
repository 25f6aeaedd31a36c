"""Two other tools' canary judges for bench/judges.py, written from their documented semantics.

Both read the same per-interval numbers as the operator's threshold judge (the presets' queries at the
end of each interval) and the same bounds: error rate at most 0.05, canary/stable p99 latency at most
1.2, canary/stable online accuracy at least 0.95. A metric's reading is a number, NaN (the query
divided 0 by 0: no traffic) or missing (an empty answer: no series in the range, a scrape gap).

- Flagger-like (Flagger's canary analysis): every interval each metric is checked against its
  ``thresholdRange``; a metric out of range, or one that returns no value (NaN counts as none),
  halts advancement and adds one to the failed-checks counter. The counter is never reset during the
  analysis; when it reaches ``threshold`` (5 here, as in Flagger's examples) the canary is rolled back.
- Argo-Rollouts-like (an AnalysisTemplate, one metric per bound): each interval is a measurement per
  metric: Successful when ``successCondition`` holds, Failed when ``failureCondition`` holds,
  Inconclusive when neither does (a NaN result), Error when the query yields no result to evaluate
  (``result[0]`` of an empty vector). A metric fails once its failed measurements exceed
  ``failureLimit`` (0, the default), and errors once its consecutive errors exceed
  ``consecutiveErrorLimit`` (4, the default); either ends the AnalysisRun, and the rollout aborts.
  An Inconclusive run pauses a rollout for a person to decide; pausing is left out here, as it is for
  every judge of the bench (only rollbacks are counted), so inconclusive measurements just go on.

Imported by bench/judges.py; run on its own it does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ERROR_RATE_MAX = 0.05
LATENCY_RATIO_MAX = 1.2
ACCURACY_RATIO_MIN = 0.95
FLAGGER_THRESHOLD = 5
ARGO_FAILURE_LIMIT = 0
ARGO_CONSECUTIVE_ERROR_LIMIT = 4

Value = float | None
"""A reading: a number, NaN (0/0) or None (no result)."""


@dataclass(frozen=True)
class IntervalMetrics:
    """What both rivals read at the end of one interval."""

    error_rate: Value
    latency_ratio: Value
    accuracy_ratio: Value

    def checks(self) -> tuple[tuple[Value, float | None, float | None], ...]:
        """(value, min, max) per metric, as a thresholdRange or a pair of conditions."""
        return ((self.error_rate, None, ERROR_RATE_MAX), (self.latency_ratio, None, LATENCY_RATIO_MAX),
                (self.accuracy_ratio, ACCURACY_RATIO_MIN, None))


def ratio(canary: Value, stable: Value) -> Value:
    """canary / stable as PromQL divides: no result if either has none, NaN for 0/0, +Inf over 0."""
    if canary is None or stable is None:
        return None
    if stable == 0:
        return math.nan if canary == 0 or math.isnan(canary) else math.inf
    return canary / stable


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def flagger_rollback(intervals: Sequence[IntervalMetrics]) -> int | None:
    """The interval (1-based) at which a Flagger-like analysis rolls back, or None."""
    failed_checks = 0
    for number, metrics in enumerate(intervals, 1):
        failed = any(value is None or math.isnan(value) or not _within(value, low, high)
                     for value, low, high in metrics.checks())
        failed_checks += failed
        if failed_checks >= FLAGGER_THRESHOLD:
            return number
    return None


def argo_rollback(intervals: Sequence[IntervalMetrics]) -> int | None:
    """The interval (1-based) at which an Argo-Rollouts-like AnalysisRun fails or errors, or None."""
    failed = [0, 0, 0]
    consecutive_errors = [0, 0, 0]
    for number, metrics in enumerate(intervals, 1):
        for index, (value, low, high) in enumerate(metrics.checks()):
            if value is None:
                consecutive_errors[index] += 1
            else:
                consecutive_errors[index] = 0
                # successCondition first; the failureCondition is its negation on a number, and neither
                # holds for NaN (every comparison with NaN is false): Inconclusive.
                if not math.isnan(value) and not _within(value, low, high):
                    failed[index] += 1
            if failed[index] > ARGO_FAILURE_LIMIT or consecutive_errors[index] > ARGO_CONSECUTIVE_ERROR_LIMIT:
                return number
    return None
