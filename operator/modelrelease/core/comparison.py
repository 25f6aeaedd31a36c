"""The statistical comparison of a canary with the stable: one check, one run, one verdict.

Two tests, both one-sided in the check's direction (two-sided for ``either``):
- mann-whitney: the canary's samples against the stable's (scipy's Mann-Whitney U); the effect is the
  relative difference of the medians, (canary - stable) / stable.
- proportions: two rates of events among trials (Fisher's exact test; z of the pooled two-proportion
  test is reported as the statistic); the effect is the difference of the rates in points.

A run fails the check only when the test is significant *and* the effect is at least ``minEffect`` in
the regression's direction: a tiny, certain difference is no regression. A run passes only once the
samples could have shown a ``minEffect`` regression (80% power at the first run's alpha) and the
difference seen is smaller than one; before that it is Inconclusive and says how many canary samples
are needed.

The confidence holds for a canary version, not for one run: runs repeat the test on growing evidence,
so run k may spend only ``(1 - confidence) * 6 / (pi^2 k^2)`` of the error budget (the terms sum to
1 - confidence), shared equally by the run's deciding comparisons. A canary equal to the stable
therefore fails with probability below 1 - confidence however many runs and checks it gets, the price
being that later runs need stronger evidence to fail a canary.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from modelrelease.api.compare import CompareSpec
from modelrelease.api.status import ComparisonRecord, Verdict

POWER = 0.8
"""The chance a pass must have had of seeing a minEffect regression."""
_MAX_NEEDED = 10_000_000
_MIN_TRIALS = 10
_MIN_SAMPLES = 5
"""Fewest samples per track a U test is run on: consecutive scrapes of one pod are not independent, so
an exact p-value from two or three of them would claim more than they show."""
_ARE = math.pi / 3  # Mann-Whitney's asymptotic relative efficiency cost against the t-test


@dataclass(frozen=True)
class ComparisonVerdict:
    verdict: Verdict
    reason: str
    record: ComparisonRecord
    canary_center: float | None = None
    """The canary's median (mann-whitney) or rate (proportions)."""
    stable_center: float | None = None


def alpha_for_run(confidence: float, run: int, comparisons: int = 1) -> float:
    """The share of ``1 - confidence`` that run ``run`` (1-based) of a canary version may spend on one of
    the run's ``comparisons`` deciding comparisons (each gets an equal part, so the budget holds for the
    release, not per check)."""
    return (1.0 - confidence) * 6.0 / (math.pi**2 * max(run, 1) ** 2) / max(comparisons, 1)


def relative_effect(canary: float, stable: float) -> float:
    if stable == 0:
        return 0.0 if canary == 0 else math.copysign(math.inf, canary)
    return (canary - stable) / abs(stable)


def _z_alpha(alpha: float, direction: str) -> float:
    return float(stats.norm.isf(alpha / 2 if direction == "either" else alpha))


def _regresses(effect: float, spec: CompareSpec) -> bool:
    if spec.direction == "increase":
        return effect >= spec.effect_floor
    if spec.direction == "decrease":
        return effect <= -spec.effect_floor
    return abs(effect) >= spec.effect_floor


def _needed_canary(variance_term: float, ratio: float, delta: float, z: float) -> int:
    """Canary samples for ``POWER`` to see ``delta``, the stable keeping ``ratio`` samples per canary one."""
    if delta <= 0 or not math.isfinite(delta):
        return 0
    n = (z + float(stats.norm.isf(1 - POWER))) ** 2 * variance_term * (1 + 1 / ratio) / delta**2
    return min(_MAX_NEEDED, math.ceil(n))


def _fewest_for_significance(alpha: float, direction: str, ratio: float) -> int:
    """The fewest canary samples with which the U test could be significant at all (total separation)."""
    sided = alpha / 2 if direction == "either" else alpha
    for n in range(_MIN_SAMPLES, 200):
        m = max(1, round(n * ratio))
        if 1 / math.comb(n + m, n) < sided:
            return n
    return 200


def _waiting(spec: CompareSpec, canary: int, stable: int, needed: int, why: str) -> str:
    return (f"{why}: {canary} canary and {stable} stable samples, need {needed} canary samples for "
            f"confidence {spec.confidence:g} and minEffect {spec.effect_floor:g}")


def _finish(spec: CompareSpec, record: ComparisonRecord, p_value: float, effect: float, n_canary: int,
            needed: int, centers: tuple[float, float]) -> ComparisonVerdict:
    direction = {"increase": "higher", "decrease": "lower", "either": "different"}[spec.direction]
    size = f"{abs(effect) * 100:.2g} points" if spec.test == "proportions" else f"{abs(effect):.1%}"
    shown = size if effect >= 0 else f"-{size}"
    found = f"canary {direction} than stable by {size} (p={p_value:.2g}, alpha {record.alpha:.2g})"
    if p_value < record.alpha and _regresses(effect, spec):
        return ComparisonVerdict("Fail", found, record, *centers)
    if _regresses(effect, spec):
        # As large as a regression, not yet certain: neither a pass nor a failure, whatever the count.
        why = f"{found}: a regression's size, not yet significant"
        if n_canary < needed:
            why = f"{found}; " + _waiting(spec, n_canary, record.stable_samples, needed,
                                          "a regression's size, not yet significant")
        return ComparisonVerdict("Inconclusive", why, record, *centers)
    if n_canary < needed:
        why = "no regression seen yet" if p_value >= record.alpha else "a difference below minEffect so far"
        return ComparisonVerdict("Inconclusive", _waiting(spec, n_canary, record.stable_samples, needed, why),
                                 record, *centers)
    return ComparisonVerdict("Pass", f"no regression of minEffect {spec.effect_floor:g} or more: effect {shown}, "
                             f"p={p_value:.2g}", record, *centers)


def compare_samples(spec: CompareSpec, canary: Sequence[float], stable: Sequence[float], run: int,
                    comparisons: int = 1, medians: tuple[float, float] | None = None) -> ComparisonVerdict:
    """Judge the canary's samples against the stable's with a Mann-Whitney U test. ``medians`` replaces
    the samples' own (a histogram's, interpolated within buckets, are finer than its bucket bounds)."""
    c = [float(v) for v in canary if math.isfinite(v)]
    s = [float(v) for v in stable if math.isfinite(v)]
    alpha = alpha_for_run(spec.confidence, run, comparisons)
    planned = alpha_for_run(spec.confidence, 1, comparisons)
    record = ComparisonRecord(test=spec.test, alpha=alpha, canary_samples=len(c), stable_samples=len(s))
    ratio = len(s) / len(c) if c and s else 1.0
    fewest = _fewest_for_significance(planned, spec.direction, ratio)
    if len(c) < fewest or len(s) < _MIN_SAMPLES:
        record = record.model_copy(update={"needed_samples": fewest})
        return ComparisonVerdict("Inconclusive", _waiting(spec, len(c), len(s), fewest, "waiting for samples"),
                                 record)
    alternative = {"increase": "greater", "decrease": "less", "either": "two-sided"}[spec.direction]
    result = stats.mannwhitneyu(c, s, alternative=alternative)
    p_value = float(result.pvalue) if math.isfinite(result.pvalue) else 1.0  # all values tied: no evidence
    median_c, median_s = medians or (float(stats.scoreatpercentile(c, 50)), float(stats.scoreatpercentile(s, 50)))
    effect = relative_effect(median_c, median_s)
    spread = statistics.stdev(s)
    # The evidence a pass needs is planned at the first run's alpha: a window of fixed length holds no
    # more samples at run 20 than at run 2, so a need that grew with every run would never be met. A
    # stable median of 0 leaves no relative effect to plan for; its spread stands in.
    scale = abs(median_s) if median_s != 0 else spread
    needed = max(fewest, _needed_canary(_ARE * spread**2, ratio, spec.effect_floor * scale,
                                        _z_alpha(planned, spec.direction)))
    record = record.model_copy(update={"statistic": float(result.statistic), "p_value": p_value,
                                       "effect": _finite_or_none(effect), "needed_samples": needed})
    return _finish(spec, record, p_value, effect, len(c), needed, (median_c, median_s))


MAX_HISTOGRAM_SAMPLES = 200_000
"""The most samples a histogram is expanded into per track; beyond it the counts are scaled down alike
(the shape is kept; the test then sees fewer samples than there were, erring towards Inconclusive)."""


def histogram_samples(buckets: Sequence[tuple[float, float]]) -> list[float]:
    """One sample per observation, at its bucket's upper bound (the +Inf bucket at the largest finite
    one), from cumulative counts. increase() extrapolates, so counts are rounded and a bucket whose
    cumulative count dips below the one before counts nothing."""
    ordered = sorted((bound, count) for bound, count in buckets if math.isfinite(count))
    finite = [bound for bound, _ in ordered if math.isfinite(bound)]
    counts, previous = [], 0.0
    for _, cumulative in ordered:
        counts.append(max(0.0, cumulative - previous))
        previous = max(previous, cumulative)
    total = sum(counts)
    scale = min(1.0, MAX_HISTOGRAM_SAMPLES / total) if total > 0 else 1.0
    samples: list[float] = []
    for (bound, _), count in zip(ordered, counts, strict=True):
        value = bound if math.isfinite(bound) else (finite[-1] if finite else 0.0)
        samples.extend([value] * round(count * scale))
    return samples


def compare_histograms(spec: CompareSpec, canary: Sequence[tuple[float, float]],
                       stable: Sequence[tuple[float, float]], run: int, comparisons: int = 1) -> ComparisonVerdict:
    """Judge two histograms by their observations: a Mann-Whitney U test of bucket bounds, ties and all;
    the effect compares medians interpolated within their buckets, as histogram_quantile() does, so a
    median near a bucket's edge does not jump a whole bucket."""
    medians = (histogram_median(canary), histogram_median(stable))
    known = None if None in medians else (float(medians[0]), float(medians[1]))  # type: ignore[arg-type]
    return compare_samples(spec, histogram_samples(canary), histogram_samples(stable), run, comparisons, known)


def histogram_median(buckets: Sequence[tuple[float, float]]) -> float | None:
    """The median of cumulative bucket counts, linear within its bucket (from 0, or the bucket below);
    a median in the +Inf bucket is the largest finite bound. None without observations."""
    ordered = sorted((bound, count) for bound, count in buckets if math.isfinite(count))
    total = max((count for _, count in ordered), default=0.0)
    if total <= 0:
        return None
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= total / 2:
            if not math.isfinite(bound):
                return lower_bound
            share = (total / 2 - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, max(lower_count, count)
    return lower_bound


def compare_proportions(spec: CompareSpec, canary_rate: float, canary_trials: float, stable_rate: float,
                        stable_trials: float, run: int, comparisons: int = 1) -> ComparisonVerdict:
    """Judge two rates (events / trials, each between 0 and 1): Fisher's exact test for the p-value (a
    z-test claims too much when only a handful of events are expected), z as the statistic."""
    n1, n2 = max(0, round(canary_trials)), max(0, round(stable_trials))
    alpha = alpha_for_run(spec.confidence, run, comparisons)
    record = ComparisonRecord(test=spec.test, alpha=alpha, canary_samples=n1, stable_samples=n2)
    if n1 < _MIN_TRIALS or n2 < _MIN_TRIALS:
        record = record.model_copy(update={"needed_samples": _MIN_TRIALS})
        return ComparisonVerdict("Inconclusive", _waiting(spec, n1, n2, _MIN_TRIALS, "waiting for traffic"), record)
    p1, p2 = min(max(canary_rate, 0.0), 1.0), min(max(stable_rate, 0.0), 1.0)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p1 - p2) / spread if spread > 0 else 0.0
    events1, events2 = round(p1 * n1), round(p2 * n2)
    alternative = {"increase": "greater", "decrease": "less", "either": "two-sided"}[spec.direction]
    exact = stats.fisher_exact([[events1, n1 - events1], [events2, n2 - events2]], alternative=alternative)
    p_value = float(exact.pvalue) if math.isfinite(exact.pvalue) else 1.0
    effect = p1 - p2
    delta = spec.effect_floor
    shifted = min(1.0, p2 + delta) if spec.direction != "decrease" else max(0.0, p2 - delta)
    variance = (shifted * (1 - shifted) + p2 * (1 - p2) * (n1 / n2)) / (1 + n1 / n2)
    planned = alpha_for_run(spec.confidence, 1, comparisons)  # as for mann-whitney: the need stays put
    needed = max(_MIN_TRIALS, _needed_canary(variance, n2 / n1, delta, _z_alpha(planned, spec.direction)))
    record = record.model_copy(update={"statistic": z, "p_value": p_value, "effect": _finite_or_none(effect),
                                       "needed_samples": needed})
    return _finish(spec, record, p_value, effect, n1, needed, (p1, p2))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
