"""The statistical comparison: its tests, its waiting for evidence, dry runs, and what a run asks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from modelrelease.api.compare import CompareSpec, sample_query_problem
from modelrelease.api.spec import AnalysisCheck, AnalysisSpec
from modelrelease.api.status import AnalysisRecord
from modelrelease.core import analysis
from modelrelease.core.analysis import ComparisonInput, Measurement
from modelrelease.core.comparison import (
    MAX_HISTOGRAM_SAMPLES,
    alpha_for_run,
    compare_histograms,
    compare_proportions,
    compare_samples,
    histogram_median,
    histogram_samples,
)
from modelrelease.core.measurement import Reading, ReleaseVariables, build_request, measurement_of

LATENCY = CompareSpec(test="mann-whitney", direction="increase", minEffect=0.2)
ACCURACY = CompareSpec(test="proportions", direction="decrease", minEffect=0.03)


def noisy(center: float, spread: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(center, spread, n))


def test_the_error_budget_over_all_runs_is_one_minus_confidence():
    spent = sum(alpha_for_run(0.99, k) for k in range(1, 100_000))
    assert spent == pytest.approx(0.01, rel=1e-4)
    assert alpha_for_run(0.99, 1) > alpha_for_run(0.99, 2) > alpha_for_run(0.99, 10)


def test_doubled_latency_fails_with_its_figures_recorded():
    verdict = compare_samples(LATENCY, noisy(0.04, 0.004, 12, 1), noisy(0.02, 0.002, 108, 2), run=1)
    assert verdict.verdict == "Fail"
    record = verdict.record
    assert record.p_value is not None and record.p_value < record.alpha
    assert record.effect == pytest.approx(1.0, abs=0.15)
    assert (record.canary_samples, record.stable_samples) == (12, 108)
    assert record.statistic is not None
    assert "higher than stable" in verdict.reason


def test_equal_noisy_samples_pass_at_every_run_over_many_seeds():
    fails = sum(compare_samples(LATENCY, noisy(0.02, 0.004, 24, s), noisy(0.02, 0.004, 200, s + 1000),
                                run=1).verdict == "Fail" for s in range(200))
    assert fails == 0


def test_a_certain_but_small_change_is_no_regression():
    # 5% slower, with almost no noise: significant, but below minEffect 0.2.
    verdict = compare_samples(LATENCY, noisy(0.021, 0.0001, 50, 3), noisy(0.02, 0.0001, 200, 4), run=1)
    assert verdict.record.p_value is not None and verdict.record.p_value < 1e-6
    assert verdict.verdict == "Pass"


def test_the_direction_decides_which_change_is_a_regression():
    faster = compare_samples(LATENCY, noisy(0.01, 0.001, 30, 5), noisy(0.02, 0.002, 100, 6), run=1)
    assert faster.verdict == "Pass"
    either = compare_samples(LATENCY.model_copy(update={"direction": "either"}),
                             noisy(0.01, 0.001, 30, 5), noisy(0.02, 0.002, 100, 6), run=1)
    assert either.verdict == "Fail"


def test_too_few_samples_wait_and_say_how_many_are_needed():
    verdict = compare_samples(LATENCY, [0.04, 0.041], noisy(0.02, 0.002, 100, 7), run=1)
    assert verdict.verdict == "Inconclusive"
    assert verdict.record.needed_samples > 2
    assert f"need {verdict.record.needed_samples} canary samples" in verdict.reason
    assert "confidence 0.99 and minEffect 0.2" in verdict.reason


def test_a_pass_waits_until_a_min_effect_regression_could_have_been_seen():
    # Equal but very noisy: no regression is seen, yet 10 samples could not have shown a 20% one.
    few = compare_samples(LATENCY, noisy(0.02, 0.01, 10, 8), noisy(0.02, 0.01, 10, 9), run=1)
    assert few.verdict == "Inconclusive" and "no regression seen yet" in few.reason
    many = compare_samples(LATENCY, noisy(0.02, 0.01, 400, 8), noisy(0.02, 0.01, 400, 9), run=1)
    assert many.verdict == "Pass"
    assert many.record.needed_samples <= 400 < 10_000


def test_non_finite_samples_are_not_samples_and_ties_are_no_evidence():
    verdict = compare_samples(LATENCY, [math.nan, math.inf, 0.02] * 10, [0.02] * 40, run=1)
    assert verdict.record.canary_samples == 10
    assert verdict.verdict != "Fail"
    assert verdict.record.p_value == 1.0 or verdict.record.p_value is None or verdict.record.p_value > 0.5


def test_five_points_less_accuracy_fails_equal_accuracy_passes_low_traffic_waits():
    worse = compare_proportions(ACCURACY, 0.85, 2000, 0.90, 18000, run=1)
    assert worse.verdict == "Fail" and worse.record.effect == pytest.approx(-0.05)
    same = compare_proportions(ACCURACY, 0.90, 2000, 0.90, 18000, run=1)
    assert same.verdict == "Pass"
    quiet = compare_proportions(ACCURACY, 0.85, 60, 0.90, 540, run=1)
    assert quiet.verdict == "Inconclusive" and quiet.record.needed_samples > 60
    assert "need" in quiet.reason


def test_errors_rising_from_nothing_fail():
    errors = CompareSpec(test="proportions", direction="increase")
    verdict = compare_proportions(errors, 0.03, 3000, 0.0, 27000, run=1)
    assert verdict.verdict == "Fail"
    clean = compare_proportions(errors, 0.0, 3000, 0.0, 27000, run=1)
    assert clean.verdict == "Pass"


# Judging a check, with bounds, a comparison, or both, and dry runs.

def _check(**fields) -> AnalysisCheck:
    return AnalysisCheck.model_validate({"name": "acc", "preset": "online-accuracy", **fields})


def _proportions(canary: float, stable: float, trials: float = 5000) -> Measurement:
    return Measurement("acc", comparison=ComparisonInput(canary_rate=canary, stable_rate=stable,
                                                         canary_trials=trials, stable_trials=trials * 9))


def test_a_compare_on_a_preset_replaces_its_default_bound():
    check = _check(compare={"test": "proportions", "direction": "decrease", "minEffect": 0.03})
    assert not analysis.bounds_of(check).any
    record = analysis.judge(check, _proportions(0.85, 0.90), 20, True, run=1)
    assert record.verdict == "Fail" and record.comparison is not None
    assert record.value == pytest.approx(0.85) and record.stable_value == pytest.approx(0.90)


def test_bounds_and_comparison_together_take_the_worse_verdict():
    check = _check(minRatio=0.5, compare={"test": "proportions", "direction": "decrease", "minEffect": 0.03})
    measured = Measurement("acc", canary=0.85, stable=0.90, samples=5000,
                           comparison=_proportions(0.85, 0.90).comparison)
    record = analysis.judge(check, measured, 20, True, run=1)
    assert record.verdict == "Fail"
    assert record.reason.startswith("bounds: within bounds; compare: canary lower")


def test_at_weight_100_a_comparison_is_skipped_and_the_run_still_passes():
    check = _check(compare={"test": "proportions", "direction": "decrease"})
    record = analysis.judge(check, Measurement("acc"), 20, stable_serving=False, run=3)
    assert record.verdict == "Skipped"
    assert analysis.run_verdict([record]) == "Pass"


def test_a_failing_dry_run_check_is_recorded_but_never_decides():
    check = _check(dryRun=True, compare={"test": "proportions", "direction": "decrease", "minEffect": 0.03})
    failing = analysis.judge(check, _proportions(0.5, 0.9), 20, True, run=1)
    assert failing.verdict == "Fail" and failing.dry_run
    passing = analysis.judge(_check(), Measurement("acc", canary=0.9, stable=0.9, samples=100), 20)
    spec = AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}, "checks": [
        {"name": "acc", "preset": "online-accuracy"}]})
    record, outcome = analysis.tally(AnalysisRecord(), [failing, passing], spec, "2026-01-01T00:00:00Z")
    assert outcome == "continue" and record.last_run_passed and record.failures == 0
    assert analysis.first_failure([failing, passing]) is None
    assert record.score == 100.0


def test_the_score_counts_deciding_checks_with_a_verdict():
    passing = analysis.judge(_check(), Measurement("acc", canary=0.9, stable=0.9, samples=100), 20)
    failing = analysis.judge(_check(), Measurement("acc", canary=0.1, stable=0.9, samples=100), 20)
    waiting = analysis.judge(_check(), Measurement("acc", canary=0.9, stable=0.9, samples=1), 20)
    assert analysis.run_score([passing, failing, waiting]) == 50.0
    assert analysis.run_score([waiting]) is None


# What a run asks Prometheus for a comparison.

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _variables(since_minutes: float | None = 3) -> ReleaseVariables:
    since = NOW - timedelta(minutes=since_minutes) if since_minutes is not None else None
    return ReleaseVariables("rel", "prod", "digits", "v2", "v1", timedelta(seconds=30), now=NOW, canary_since=since)


def test_mann_whitney_asks_ranges_from_the_canary_start_one_sample_per_interval():
    check = AnalysisCheck.model_validate({"name": "p99", "preset": "latency-p99",
                                          "compare": {"test": "mann-whitney", "direction": "increase"}})
    [item] = build_request([check], _variables(3)).checks
    asks = item.queries.by_role()
    assert [a.role for a in asks] == ["compare-canary", "compare-stable"]
    for ask in asks:
        assert ask.window is not None
        assert ask.window.end == NOW and ask.window.start == NOW - timedelta(minutes=3)
        assert ask.window.step_seconds == 30
        assert "[30s]" in ask.promql  # the rate's range stays the interval
    assert 'track="canary"' in asks[0].promql and 'version="v1"' in asks[1].promql


def test_proportions_ask_rates_and_trials_over_the_window_capped_by_its_length():
    check = AnalysisCheck.model_validate({"name": "acc", "preset": "online-accuracy",
                                          "compare": {"test": "proportions", "window": "2m"}})
    [item] = build_request([check], _variables(5)).checks
    asks = item.queries.by_role()
    assert [a.role for a in asks] == ["compare-canary", "compare-stable", "compare-canary-trials",
                                      "compare-stable-trials"]
    assert all(a.window is None and "[120s]" in a.promql for a in asks)


def test_without_a_stable_serving_no_comparison_is_asked():
    check = AnalysisCheck.model_validate({"name": "acc", "preset": "online-accuracy",
                                          "compare": {"test": "proportions"}, "min": 0.5})
    variables = ReleaseVariables("rel", "prod", "digits", "v2", None, timedelta(seconds=30), now=NOW)
    [item] = build_request([check], variables).checks
    assert [a.role for a in item.queries.by_role()] == ["canary", "samples"]


def test_the_comparisons_readings_become_its_input_and_its_errors_an_error():
    readings = {"compare-canary": Reading.of(0.85), "compare-stable": Reading.of(0.9),
                "compare-canary-trials": Reading.of(100), "compare-stable-trials": Reading.no_data()}
    measured = measurement_of("acc", readings)
    assert measured.comparison == ComparisonInput(canary_rate=0.85, stable_rate=0.9, canary_trials=100,
                                                  stable_trials=0.0)
    failed = measurement_of("p99", {"compare-canary": Reading.of_samples([1.0]),
                                    "compare-stable": Reading.failure("boom")})
    assert failed.comparison is not None and failed.comparison.error == "stable query: boom"


# Bad input, refused with the field and the fix.

@pytest.mark.parametrize(("compare", "fragment"), [
    ({"test": "t-test"}, "mann-whitney"),
    ({"test": "mann-whitney", "confidence": 1.0}, "confidence"),
    ({"test": "mann-whitney", "confidence": 0}, "confidence"),
    ({"test": "mann-whitney", "direction": "up"}, "direction"),
    ({"test": "mann-whitney", "window": "10 minutes"}, "window"),
])
def test_a_bad_compare_is_refused_naming_the_field(compare, fragment):
    with pytest.raises(ValidationError) as refused:
        AnalysisCheck.model_validate({"name": "c", "query": 'x{track="{{ track }}"}', "compare": compare})
    assert fragment in str(refused.value)


def test_a_scalar_query_cannot_be_compared():
    with pytest.raises(ValidationError, match="yields no samples"):
        AnalysisCheck.model_validate({"name": "c", "query": "vector(1)", "compare": {"test": "mann-whitney"}})
    with pytest.raises(ValidationError, match="returns a scalar"):
        AnalysisCheck.model_validate({"name": "c", "query": 'scalar(sum(x{track="{{ track }}"}))',
                                      "compare": {"test": "mann-whitney"}})
    assert sample_query_problem('histogram_quantile(0.99, sum by (le, pod) (rate(b[{{ interval }}])))') is None


def test_proportions_need_a_trial_count():
    with pytest.raises(ValidationError, match="set sampleQuery"):
        AnalysisCheck.model_validate({"name": "c", "query": 'x{track="{{ track }}"}',
                                      "compare": {"test": "proportions"}})


def test_a_window_shorter_than_the_interval_is_refused():
    with pytest.raises(ValidationError, match=r"compare\.window \(30s\) is shorter than the interval"):
        AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}, "interval": "1m", "checks": [
            {"name": "acc", "preset": "online-accuracy", "compare": {"test": "proportions", "window": "30s"}}]})


# Samples from a histogram's buckets: one per observation.

def test_a_histogram_becomes_one_sample_per_observation_at_its_bucket_bound():
    buckets = [(0.01, 3.0), (0.05, 5.2), (0.1, 4.9), (math.inf, 7.0)]
    # 3 under 10 ms, 2 more under 50 ms (5.2 rounds), none from a dip, 2 above the last bound.
    assert histogram_samples(buckets) == [0.01] * 3 + [0.05] * 2 + [0.1] * 2
    assert histogram_samples([]) == []


def test_a_huge_histogram_is_scaled_down_keeping_its_shape():
    samples = histogram_samples([(0.01, 300_000.0), (0.02, 400_000.0), (math.inf, 400_000.0)])
    assert len(samples) == pytest.approx(MAX_HISTOGRAM_SAMPLES, abs=2)
    assert samples.count(0.01) == pytest.approx(3 * samples.count(0.02), rel=0.01)


def _latency_histogram(scale: float, requests: int, seed: int) -> list[tuple[float, float]]:
    bounds = (0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15, math.inf)
    observed = np.random.default_rng(seed).lognormal(math.log(0.02 * scale), 0.3, requests)
    return [(b, float((observed <= b).sum())) for b in bounds]


def test_histogram_comparisons_see_a_doubled_latency_at_once_and_pass_equal_traffic():
    spec = CompareSpec(test="mann-whitney", direction="increase", samples="histogram")
    slow = compare_histograms(spec, _latency_histogram(2, 300, 1), _latency_histogram(1, 2700, 2), run=1,
                              comparisons=3)
    assert slow.verdict == "Fail" and slow.record.canary_samples == 300
    fails = sum(compare_histograms(spec, _latency_histogram(1, 300, s), _latency_histogram(1, 2700, s + 99),
                                   run=1, comparisons=3).verdict == "Fail" for s in range(100))
    assert fails == 0


def test_histogram_samples_ask_bucket_counts_over_the_window():
    check = AnalysisCheck.model_validate({"name": "p99", "preset": "latency-p99",
                                          "compare": {"test": "mann-whitney", "samples": "histogram"}})
    [item] = build_request([check], _variables(3)).checks
    asks = item.queries.by_role()
    assert [(a.role, a.buckets, a.window) for a in asks] == [("compare-canary", True, None),
                                                             ("compare-stable", True, None)]
    assert all(a.promql.startswith("sum by (le) (increase(") and "[180s]" in a.promql for a in asks)
    measured = measurement_of("p99", {"compare-canary": Reading(buckets=((0.1, 2.0),)),
                                      "compare-stable": Reading(buckets=((0.1, 5.0),))})
    assert measured.comparison == ComparisonInput(canary_buckets=((0.1, 2.0),), stable_buckets=((0.1, 5.0),))


@pytest.mark.parametrize(("check", "fragment"), [
    ({"preset": "error-rate", "compare": {"test": "mann-whitney", "samples": "histogram"}},
     "preset error-rate reads no histogram"),
    ({"query": 'sum(rate(x{track="{{ track }}"}[{{ interval }}]))',
      "compare": {"test": "mann-whitney", "samples": "histogram"}}, "bucket counts by le"),
    ({"preset": "online-accuracy", "compare": {"test": "proportions", "samples": "histogram"}},
     "histogram is for test mann-whitney"),
])
def test_histogram_samples_need_a_histogram(check, fragment):
    with pytest.raises(ValidationError, match=fragment):
        AnalysisCheck.model_validate({"name": "c", **check})


def test_a_histograms_median_is_interpolated_within_its_bucket():
    assert histogram_median([(0.1, 5200.0), (0.25, 9000.0), (math.inf, 10000.0)]) == pytest.approx(0.1 * 5000 / 5200)
    assert histogram_median([(0.1, 4800.0), (0.25, 9000.0), (math.inf, 10000.0)]) == pytest.approx(
        0.1 + 0.15 * 200 / 4200)
    assert histogram_median([(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in the +Inf bucket: the last bound
    assert histogram_median([(0.1, 0.0), (math.inf, 0.0)]) is None


def test_the_evidence_a_pass_needs_does_not_grow_with_the_runs():
    spec = CompareSpec(test="proportions", direction="increase")
    first, twentieth = (compare_proportions(spec, 0.01, 3000, 0.01, 27000, run=k) for k in (1, 20))
    assert first.record.needed_samples == twentieth.record.needed_samples
    assert (first.verdict, twentieth.verdict) == ("Pass", "Pass")
    assert twentieth.record.alpha < first.record.alpha / 100


def test_an_effect_as_large_as_a_regression_never_passes_even_when_not_significant():
    # 20% slower on five noisy samples: not significant at run 1's alpha, but the size of a regression.
    verdict = compare_samples(LATENCY, [0.024, 0.030, 0.018, 0.026, 0.022] * 2, noisy(0.02, 0.006, 40, 11), run=1)
    assert verdict.record.effect is not None and verdict.record.effect >= 0.2
    assert verdict.verdict == "Inconclusive" and "a regression's size" in verdict.reason


def test_a_min_effect_of_zero_is_refused():
    with pytest.raises(ValidationError, match="minEffect"):
        CompareSpec.model_validate({"test": "proportions", "minEffect": 0})
