"""Analysis verdicts: one run's measurements judged against each check, then counted.

Semantics (per canary version):
- Pass: every bound holds. Fail: a bound is broken. Inconclusive: too little traffic (the sample
  query below minSampleCount), no data, or stable without data for a relative bound.
  Error: the query could not be answered (Prometheus down, 5xx, several series).
- A run's verdict is the worst of its checks: Fail > Error > Inconclusive > Pass.
- failures > failureLimit rolls back; inconclusive runs > inconclusiveLimit pause, and so do error
  runs > consecutiveErrorLimit, each counted since the last decisive (pass or fail) run.
  An error never counts as success.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from modelrelease.api.spec import AnalysisCheck, AnalysisSpec
from modelrelease.api.status import AnalysisRecord, CheckRecord, ModelReleaseStatus, Verdict
from modelrelease.core import comparison
from modelrelease.core.timestamps import parse_timestamp
from modelrelease.promql.presets import PRESETS

Outcome = Literal["continue", "rollback", "pause"]
_SEVERITY: dict[Verdict, int] = {"Pass": 0, "Skipped": 0, "Inconclusive": 1, "Error": 2, "Fail": 3}


@dataclass(frozen=True)
class ComparisonInput:
    """What a check's comparison read: samples per track (mann-whitney), or rates and trial counts
    (proportions), or the error that stopped it."""

    canary_samples: tuple[float, ...] = ()
    stable_samples: tuple[float, ...] = ()
    canary_rate: float | None = None
    stable_rate: float | None = None
    canary_trials: float = 0.0
    stable_trials: float = 0.0
    canary_buckets: tuple[tuple[float, float], ...] = ()
    """(upper bound, cumulative count) per bucket (mann-whitney on a histogram)."""
    stable_buckets: tuple[tuple[float, float], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Measurement:
    """What the runtime read for one check in one run. ``None`` values mean "no data"."""

    check: str
    canary: float | None = None
    stable: float | None = None
    samples: float | None = None
    error: str | None = None
    comparison: ComparisonInput | None = None
    """Set when the check compares and the stable serves; None otherwise."""


@dataclass(frozen=True)
class Bounds:
    min: float | None
    max: float | None
    min_ratio: float | None
    max_ratio: float | None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.min, self.max, self.min_ratio, self.max_ratio))

    @property
    def relative(self) -> bool:
        return self.min_ratio is not None or self.max_ratio is not None

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.min_ratio is not None:
            parts.append(f"canary/stable >= {self.min_ratio:g}")
        if self.max_ratio is not None:
            parts.append(f"canary/stable <= {self.max_ratio:g}")
        return ", ".join(parts)


def bounds_of(check: AnalysisCheck) -> Bounds:
    """The check's own bounds, or its preset's defaults when it sets none and does not compare (a
    comparison on a preset replaces the preset's bound)."""
    own = Bounds(check.min, check.max, check.min_ratio, check.max_ratio)
    if check.preset is None or own.any or check.compare is not None:
        return own
    preset = PRESETS[check.preset]
    return Bounds(None, preset.max, preset.min_ratio, preset.max_ratio)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def judge(
    check: AnalysisCheck, measured: Measurement, min_sample_count: int, stable_serving: bool = True, run: int = 1,
    comparisons: int = 1,
) -> CheckRecord:
    """Judge one check in the ``run``-th run (1-based) of a canary version. ``stable_serving`` is False at
    weight 100, when the stable track has no pods: relative bounds and comparisons then have nothing to
    compare with and are skipped (absolute bounds still apply). ``comparisons``: the deciding
    comparisons of the run (``deciding_comparisons``), which share the run's error budget."""
    parts = []
    if bounds_of(check).any:
        parts.append(_judge_bounds(check, measured, min_sample_count, stable_serving))
    if check.compare is not None:
        parts.append(_judge_comparison(check, measured, stable_serving, run, comparisons))
    record = parts[0] if len(parts) == 1 else _combine(parts)
    return record.model_copy(update={"dry_run": True}) if check.dry_run else record


def _combine(parts: list[CheckRecord]) -> CheckRecord:
    """A check with bounds and a comparison: the worse verdict, both reasons, the bound's values."""
    bound, compared = parts
    if bound.verdict == "Skipped":
        verdict = compared.verdict
    elif compared.verdict == "Skipped":
        verdict = bound.verdict
    else:
        verdict = max((bound.verdict, compared.verdict), key=lambda v: _SEVERITY[v])
    return bound.model_copy(update=dict(
        verdict=verdict, reason=f"bounds: {bound.reason}; compare: {compared.reason}",
        comparison=compared.comparison))


def deciding_comparisons(checks: Sequence[AnalysisCheck]) -> int:
    """How many of the checks compare and decide (dry runs spend none of the error budget)."""
    return sum(1 for c in checks if c.compare is not None and not c.dry_run)


def _judge_comparison(check: AnalysisCheck, measured: Measurement, stable_serving: bool, run: int,
                      comparisons: int) -> CheckRecord:
    compare = check.compare
    assert compare is not None
    record = dict(name=check.name, bound=f"compare {compare.test} {compare.direction}")
    if not stable_serving:
        return CheckRecord(verdict="Skipped", reason="comparison skipped: stable serves no traffic", **record)
    found = measured.comparison
    if found is None:
        return CheckRecord(verdict="Error", reason="the comparison's queries were not sent", **record)
    if found.error:
        return CheckRecord(verdict="Error", reason=found.error, **record)
    if compare.test == "proportions":
        if not (_usable(found.canary_rate) and _usable(found.stable_rate)):
            missing = "canary" if not _usable(found.canary_rate) else "stable"
            return CheckRecord(verdict="Inconclusive", reason=f"no data for the {missing} rate", **record)
        verdict = comparison.compare_proportions(compare, float(found.canary_rate), found.canary_trials,  # type: ignore[arg-type]
                                                 float(found.stable_rate), found.stable_trials, run,  # type: ignore[arg-type]
                                                 comparisons)
    elif compare.samples == "histogram":
        verdict = comparison.compare_histograms(compare, found.canary_buckets, found.stable_buckets, run,
                                                comparisons)
    else:
        verdict = comparison.compare_samples(compare, found.canary_samples, found.stable_samples, run, comparisons)
    return CheckRecord(verdict=verdict.verdict, reason=verdict.reason, value=verdict.canary_center,
                       stable_value=verdict.stable_center, comparison=verdict.record, **record)


def _judge_bounds(
    check: AnalysisCheck, measured: Measurement, min_sample_count: int, stable_serving: bool
) -> CheckRecord:
    bounds = bounds_of(check)
    record = dict(name=check.name, bound=bounds.describe(), value=measured.canary, stable_value=measured.stable)
    if measured.error:
        return CheckRecord(verdict="Error", reason=measured.error, **record)
    if measured.samples is not None and (not _usable(measured.samples) or measured.samples < min_sample_count):
        seen = measured.samples if _usable(measured.samples) else 0
        return CheckRecord(
            verdict="Inconclusive",
            reason=f"waiting for traffic: {seen:g} samples, need {min_sample_count}",
            **record,
        )
    if not _usable(measured.canary):
        return CheckRecord(verdict="Inconclusive", reason="no data for the canary", **record)
    value = float(measured.canary)  # type: ignore[arg-type]
    # Each bound is tested for holding (`value >= min`), never for being broken (`value < min`): any
    # comparison with a NaN is False, so only this way round can a NaN never pass for within bounds.
    broken = []
    if bounds.min is not None and not value >= bounds.min:
        broken.append(f"{value:g} < {bounds.min:g}")
    if bounds.max is not None and not value <= bounds.max:
        broken.append(f"{value:g} > {bounds.max:g}")
    if bounds.relative and stable_serving:
        if not _usable(measured.stable):
            return CheckRecord(verdict="Inconclusive", reason="no data for stable to compare with", **record)
        stable = float(measured.stable)  # type: ignore[arg-type]
        ratio = _ratio(value, stable)
        if bounds.min_ratio is not None and not ratio >= bounds.min_ratio:
            broken.append(f"canary/stable {ratio:.3g} < {bounds.min_ratio:g}")
        if bounds.max_ratio is not None and not ratio <= bounds.max_ratio:
            broken.append(f"canary/stable {ratio:.3g} > {bounds.max_ratio:g}")
    if broken:
        return CheckRecord(verdict="Fail", reason="; ".join(broken), **record)
    if bounds.relative and not stable_serving:
        return CheckRecord(verdict="Pass", reason="within bounds; relative bounds skipped: stable serves no traffic",
                           **record)
    return CheckRecord(verdict="Pass", reason="within bounds", **record)


def _ratio(canary: float, stable: float) -> float:
    if stable == 0:
        # Both zero (e.g. no errors on either) is equal; anything over a zero stable is unbounded.
        return 1.0 if canary == 0 else math.inf
    return canary / stable


def run_verdict(results: list[CheckRecord]) -> Verdict:
    """The worst verdict of the deciding checks; dry-run checks never decide."""
    worst: Verdict = max((r.verdict for r in results if not r.dry_run), key=lambda v: _SEVERITY[v], default="Pass")
    return "Pass" if worst == "Skipped" else worst


def run_score(results: list[CheckRecord]) -> float | None:
    """The share of the deciding checks with a verdict that passed, 0 to 100; None when none had one."""
    decided = [r for r in results if not r.dry_run and r.verdict in ("Pass", "Fail")]
    return 100.0 * sum(r.verdict == "Pass" for r in decided) / len(decided) if decided else None


def tally(
    record: AnalysisRecord, results: list[CheckRecord], spec: AnalysisSpec, now: str
) -> tuple[AnalysisRecord, Outcome]:
    """Count one run into the record and say what it means for the release."""
    verdict = run_verdict(results)
    failures = record.failures + (verdict == "Fail")
    # Only a decisive run (pass or fail) ends a streak: runs that alternate between errors and
    # too little traffic must still reach a limit and pause, never idle forever.
    decisive = verdict in ("Pass", "Fail")
    inconclusive = 0 if decisive else record.inconclusive + (verdict == "Inconclusive")
    errors = 0 if decisive else record.consecutive_errors + (verdict == "Error")
    updated = record.model_copy(
        update=dict(
            last_run_at=now,
            last_run_passed=verdict == "Pass",
            runs=record.runs + 1,
            successes=record.successes + (verdict == "Pass"),
            failures=failures,
            inconclusive=inconclusive,
            consecutive_errors=errors,
            checks=results,
            score=run_score(results),
        )
    )
    if failures > spec.failure_limit:
        return updated, "rollback"
    if inconclusive > spec.inconclusive_limit or errors > spec.consecutive_error_limit:
        return updated, "pause"
    return updated, "continue"


def first_failure(results: list[CheckRecord]) -> CheckRecord | None:
    return next((r for r in results if r.verdict == "Fail" and not r.dry_run), None)


ROUTINE_FLUSH = timedelta(seconds=60)
"""A passing run that decides nothing is written to status at least this often (see routine_run_only)."""
_RUN_FIELDS = {"last_run_at", "last_run_passed", "runs", "successes", "checks"}


def routine_run_only(written: ModelReleaseStatus, planned: ModelReleaseStatus) -> bool:
    """Whether ``planned`` differs from the ``written`` status only by passing analysis runs that end
    no step and no streak, within ROUTINE_FLUSH of the last run that was written.

    Such runs need not cost a status write each: the operator keeps them in memory and writes them with
    the next write, or after ROUTINE_FLUSH. A restart loses nothing that matters: it runs the analysis
    again. The operator's metrics carry every run as it happens.
    """
    before, after = written.analysis, planned.analysis
    if not after.last_run_passed or after.last_run_at is None or after.last_run_at == before.last_run_at:
        return False
    if before.last_run_at is None or before.version != after.version:
        return False
    if parse_timestamp(after.last_run_at) - parse_timestamp(before.last_run_at) >= ROUTINE_FLUSH:
        return False
    same_run_state = before.model_dump(exclude=_RUN_FIELDS) == after.model_dump(exclude=_RUN_FIELDS)
    rest_before = written.model_dump(exclude={"analysis"})
    rest_after = planned.model_dump(exclude={"analysis"})
    return same_run_state and rest_before == rest_after
