"""Analysis of recorded series (imported with promtool), evaluated at a fixed time: exact verdicts."""

from __future__ import annotations

import pytest

from modelrelease.api.status import AnalysisRecord
from modelrelease.core.analysis import run_verdict, tally
from tests.prometheus import history_data
from tests.prometheus.analysis_helpers import analysis_spec, run_once
from tests.prometheus.conftest import History

WAITING_12 = ("Inconclusive", "waiting for traffic: 12 samples, need 20")
WAITING_0 = ("Inconclusive", "waiting for traffic: 0 samples, need 20")
NO_CANARY = ("Inconclusive", "no data for the canary")
PASS = ("Pass", "within bounds")

EXPECTED = {
    "steady": {
        "error-rate": PASS, "latency-p99": PASS, "confidence": PASS, "online-accuracy": PASS,
        "success-rate": PASS,
    },
    "failing": {
        "error-rate": ("Fail", "0.2 > 0.05"),
        "latency-p99": ("Fail", "canary/stable 4.01 > 1.2"),
        "confidence": ("Fail", "canary/stable 0.667 < 0.95"),
        "online-accuracy": ("Fail", "canary/stable 0.702 < 0.95"),
        "success-rate": PASS,
    },
    "quiet": {
        "error-rate": WAITING_12, "latency-p99": WAITING_12, "confidence": WAITING_12,
        "online-accuracy": ("Inconclusive", "waiting for traffic: 8 samples, need 20"),
        "success-rate": ("Fail", "0.2 < 5"),
    },
    "gappy": {
        "error-rate": WAITING_0, "latency-p99": WAITING_0, "confidence": WAITING_0, "online-accuracy": WAITING_0,
        "success-rate": NO_CANARY,
    },
    "nan": {
        "error-rate": PASS, "latency-p99": PASS, "confidence": NO_CANARY, "online-accuracy": PASS,
        "success-rate": PASS,
    },
}
RUN_VERDICTS = {"steady": "Pass", "failing": "Fail", "quiet": "Fail", "gappy": "Inconclusive",
                "nan": "Inconclusive"}


def test_every_recorded_scenario_is_covered() -> None:
    assert set(EXPECTED) == set(history_data.SCENARIOS) == set(RUN_VERDICTS)


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_recorded_scenario_gets_its_exact_verdicts(history: History, model: str) -> None:
    spec = analysis_spec(history.prometheus.url, f"{history_data.INTERVAL_SECONDS}s", minSampleCount=20)
    at_evaluation = history.provider.at(history_data.EVALUATED_AT)

    _, records = run_once(at_evaluation, spec, history.variables(model))

    assert {r.name: (r.verdict, r.reason) for r in records} == EXPECTED[model]
    assert run_verdict(records) == RUN_VERDICTS[model]


def test_recorded_values_are_the_exact_rates(history: History) -> None:
    spec = analysis_spec(history.prometheus.url, f"{history_data.INTERVAL_SECONDS}s")
    at_evaluation = history.provider.at(history_data.EVALUATED_AT)

    measurements, _ = run_once(at_evaluation, spec, history.variables("failing"))
    readings = {m.check: (m.canary, m.stable, m.samples) for m in measurements}

    assert readings["error-rate"] == (pytest.approx(0.2), None, pytest.approx(600))
    # Every request in one bucket: p99 interpolates 99% of the way through it.
    assert readings["latency-p99"] == (pytest.approx(0.075 + 0.99 * 0.025), pytest.approx(0.015 + 0.99 * 0.01),
                                       pytest.approx(600))
    assert readings["confidence"] == (pytest.approx(0.6), pytest.approx(0.9), pytest.approx(600))
    assert readings["online-accuracy"] == (pytest.approx(40 / 60), pytest.approx(0.95), pytest.approx(240))
    assert readings["success-rate"] == (pytest.approx(8.0), None, None)


def test_the_same_series_before_the_gap_pass(history: History) -> None:
    """The gappy canary is healthy; only the evaluation inside its gap lacks data."""
    spec = analysis_spec(history.prometheus.url, f"{history_data.INTERVAL_SECONDS}s")
    before_gap = history.provider.at(history_data.T0 + 300)

    _, records = run_once(before_gap, spec, history.variables("gappy"))

    assert run_verdict(records) == "Pass", records


def test_recorded_runs_tally_to_the_release_outcome(history: History) -> None:
    """failureLimit 1: the first failing run is tolerated, the second rolls back."""
    spec = analysis_spec(history.prometheus.url, f"{history_data.INTERVAL_SECONDS}s", failureLimit=1)
    provider = history.provider.at(history_data.EVALUATED_AT)
    record, outcomes = AnalysisRecord(version="v2"), []
    for model in ("steady", "failing", "steady", "failing"):
        _, records = run_once(provider, spec, history.variables(model))
        record, outcome = tally(record, records, spec, now="2024-01-01T00:10:00Z")
        outcomes.append(outcome)

    assert outcomes == ["continue", "continue", "continue", "rollback"]
    assert (record.runs, record.successes, record.failures) == (4, 2, 2)
