"""The statistical judge on recorded, noisy traffic in a real Prometheus (loaded with promtool).

Each scenario of ``compare_history_data`` is measured the way the operator measures a run: the core
renders the checks for a release at a fixed time, the runtime sends them (range queries for
Mann-Whitney, instant queries over the window for proportions), and ``judge`` compares canary with
stable. The noise is seeded, so every figure below is the same on every run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrelease.adapters.prometheus import PrometheusConnection, PrometheusProvider
from modelrelease.api.spec import AnalysisCheck
from modelrelease.api.status import CheckRecord
from modelrelease.core import analysis
from modelrelease.core.comparison import alpha_for_run
from modelrelease.core.measurement import ReleaseVariables, build_request
from modelrelease.runtime.measure import read_run
from modelrelease_local.prometheus import PrometheusProcess, create_blocks_from_openmetrics
from tests.prometheus import compare_history_data as data

LATENCY: dict[str, Any] = {
    "name": "latency-p99", "preset": "latency-p99", "compare": {"test": "mann-whitney", "direction": "increase"}}
ACCURACY: dict[str, Any] = {
    "name": "online-accuracy", "preset": "online-accuracy",
    "compare": {"test": "proportions", "direction": "decrease", "minEffect": 0.03},
}
CHECKS = [AnalysisCheck.model_validate(check) for check in (LATENCY, ACCURACY)]
MIN_SAMPLE_COUNT = 20
WINDOW_STEPS = 600 // data.INTERVAL_SECONDS + 1
"""Range steps in the default 10m window at the default step (one interval)."""
WAITING = re.compile(
    r"(?P<why>[a-z ]+): (?P<canary>\d+) canary and (?P<stable>\d+) stable samples, "
    r"need (?P<needed>\d+) canary samples for confidence 0.99 and minEffect (?P<effect>[\d.]+)")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProvider]:
    workdir = tmp_path_factory.mktemp("prometheus-compare")
    create_blocks_from_openmetrics(data.write(workdir / "history.om"), workdir / "data")
    # The recorded blocks are far in the past; a long retention keeps them from being deleted.
    prometheus = PrometheusProcess(workdir, data_dir=workdir / "data", retention="100y")
    prometheus.start()
    with PrometheusProvider(PrometheusConnection(prometheus.url, timeout_seconds=5)) as connected:
        yield connected
    prometheus.stop()


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def variables(model: str, now: int = data.NOW) -> ReleaseVariables:
    return ReleaseVariables(
        "rel", "default", model, data.VERSIONS["canary"], data.VERSIONS["stable"],
        timedelta(seconds=data.INTERVAL_SECONDS), now=at(now), canary_since=at(data.CANARY_SINCE),
    )


@dataclass(frozen=True)
class Judged:
    latency: CheckRecord
    accuracy: CheckRecord


def judge_run(provider: PrometheusProvider, model: str, run: int = 1, now: int = data.NOW) -> Judged:
    """One analysis run as the operator makes it, ``run`` runs into the canary version."""
    request = build_request(CHECKS, variables(model, now))
    measurements = read_run(provider.at(now), request).measurements()
    latency, accuracy = (
        analysis.judge(check, measured, MIN_SAMPLE_COUNT, request.stable_serving, run=run)
        for check, measured in zip(CHECKS, measurements, strict=True)
    )
    return Judged(latency, accuracy)


def feedback_in_window(model: str, track: str) -> int:
    return data.feedback_between(model, track, data.NOW - 600, data.NOW)


def test_a_twice_as_slow_canary_fails_the_latency_comparison(provider: PrometheusProvider) -> None:
    record = judge_run(provider, "regression").latency

    assert record.verdict == "Fail"
    assert record.reason.startswith("canary higher than stable by ")
    compared = record.comparison
    assert compared is not None and compared.test == "mann-whitney"
    # One p99 per range step and track, every step of the window.
    assert (compared.canary_samples, compared.stable_samples) == (WINDOW_STEPS, WINDOW_STEPS)
    assert compared.p_value is not None and compared.p_value < compared.alpha == pytest.approx(alpha_for_run(0.99, 1))
    # The medians' relative difference: twice the latency, as the histogram's buckets resolve it.
    assert compared.effect is not None and compared.effect == pytest.approx(0.9, abs=0.1)
    assert record.value is not None and record.stable_value is not None
    assert record.value == pytest.approx(record.stable_value * (1 + compared.effect))


def test_five_points_less_accurate_fails_the_proportions_comparison(provider: PrometheusProvider) -> None:
    record = judge_run(provider, "regression").accuracy

    assert record.verdict == "Fail"
    assert record.reason.startswith("canary lower than stable by 5 points")
    compared = record.comparison
    assert compared is not None and compared.test == "proportions"
    assert compared.p_value is not None and compared.p_value < compared.alpha
    assert compared.effect == pytest.approx(-0.05, abs=0.01)
    # The trials are the feedback the window saw (increase() extrapolates to its edges, hence approx).
    assert compared.canary_samples == pytest.approx(feedback_in_window("regression", "canary"), rel=0.03)
    assert compared.stable_samples == pytest.approx(feedback_in_window("regression", "stable"), rel=0.03)


def test_equal_noisy_traffic_passes_both_comparisons(provider: PrometheusProvider) -> None:
    judged = judge_run(provider, "equal")

    assert (judged.latency.verdict, judged.accuracy.verdict) == ("Pass", "Pass")
    assert judged.latency.reason.startswith("no regression of minEffect 0.1 or more: effect ")
    assert judged.accuracy.reason.startswith("no regression of minEffect 0.03 or more: effect ")
    for record in (judged.latency, judged.accuracy):
        compared = record.comparison
        assert compared is not None and compared.p_value is not None and compared.effect is not None
        assert abs(compared.effect) < (0.1 if compared.test == "mann-whitney" else 0.03)
        # A pass is only given on evidence that could have shown a minEffect regression.
        assert compared.canary_samples >= compared.needed_samples > 0
    latency = judged.latency.comparison
    assert latency is not None and (latency.canary_samples, latency.stable_samples) == (WINDOW_STEPS, WINDOW_STEPS)


def test_a_trickle_of_canary_traffic_is_inconclusive_and_says_what_is_needed(provider: PrometheusProvider) -> None:
    judged = judge_run(provider, "trickle")

    for record, effect in ((judged.latency, "0.1"), (judged.accuracy, "0.03")):
        assert record.verdict == "Inconclusive", record.reason
        compared = record.comparison
        assert compared is not None and compared.p_value is None  # too few to test at all
        waiting = WAITING.fullmatch(record.reason)
        assert waiting is not None, record.reason
        assert waiting["effect"] == effect
        assert int(waiting["canary"]) == compared.canary_samples < compared.needed_samples == int(waiting["needed"])
        assert int(waiting["stable"]) == compared.stable_samples
    # One request in the window: the four 60s windows around it hold a p99; the others hold none.
    latency = judged.latency.comparison
    assert latency is not None and (latency.canary_samples, latency.stable_samples) == (1, WINDOW_STEPS)
    accuracy = judged.accuracy.comparison
    assert accuracy is not None and accuracy.canary_samples == feedback_in_window("trickle", "canary") == 1
    assert judged.accuracy.reason.startswith("waiting for traffic: 1 canary and ")


def test_later_runs_spend_less_of_the_error_budget_and_still_fail_a_regression(provider: PrometheusProvider) -> None:
    judged = judge_run(provider, "regression", run=10)

    for record in (judged.latency, judged.accuracy):
        assert record.verdict == "Fail"
        assert record.comparison is not None
        assert record.comparison.alpha == pytest.approx(alpha_for_run(0.99, 10))
        assert record.comparison.alpha < alpha_for_run(0.99, 1) / 99


def test_the_window_never_reaches_before_the_canary_started(provider: PrometheusProvider) -> None:
    # Three minutes after the canary started: a 3m window of 30s steps, not the 10m asked for.
    compared = judge_run(provider, "regression", now=data.CANARY_SINCE + 180).latency.comparison

    assert compared is not None
    # The stable has a p99 at all 7 steps; the canary none at its first (its rate() needs two scrapes).
    assert (compared.canary_samples, compared.stable_samples) == (6, 7)


def test_the_comparison_is_not_judged_without_a_serving_stable(provider: PrometheusProvider) -> None:
    unstable = ReleaseVariables(
        "rel", "default", "regression", data.VERSIONS["canary"], None, timedelta(seconds=data.INTERVAL_SECONDS),
        now=at(data.NOW), canary_since=at(data.CANARY_SINCE),
    )
    request = build_request(CHECKS, unstable)
    measurements = read_run(provider.at(data.NOW), request).measurements()
    records = [analysis.judge(c, m, MIN_SAMPLE_COUNT, request.stable_serving, run=1)
               for c, m in zip(CHECKS, measurements, strict=True)]

    assert [r.verdict for r in records] == ["Skipped", "Skipped"]
    assert all(r.comparison is None for r in records)


HISTOGRAM = AnalysisCheck.model_validate({
    "name": "latency-histogram", "preset": "latency-p99",
    "compare": {"test": "mann-whitney", "direction": "increase", "samples": "histogram"}})


def judge_histogram(provider: PrometheusProvider, model: str, now: int) -> CheckRecord:
    request = build_request([HISTOGRAM], variables(model, now))
    [measured] = read_run(provider.at(now), request).measurements()
    return analysis.judge(HISTOGRAM, measured, MIN_SAMPLE_COUNT, request.stable_serving, run=1, comparisons=2)


def test_on_the_histogram_every_request_is_a_sample_and_one_interval_decides(provider: PrometheusProvider) -> None:
    # One interval after the canary started: one p99 per track is far too little for a U test, but the
    # requests the buckets counted are plenty.
    one_interval = data.CANARY_SINCE + data.INTERVAL_SECONDS
    slow = judge_histogram(provider, "regression", one_interval)
    assert slow.verdict == "Fail", slow.reason
    assert slow.comparison is not None and slow.comparison.canary_samples > 20
    assert slow.comparison.effect is not None and slow.comparison.effect > 0.5
    assert judge_histogram(provider, "equal", one_interval).verdict != "Fail"
    assert judge_histogram(provider, "equal", data.NOW).verdict == "Pass"
    trickle = judge_histogram(provider, "trickle", data.NOW)
    assert trickle.verdict == "Inconclusive" and "need" in trickle.reason
