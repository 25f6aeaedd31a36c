"""Prometheus going away mid-analysis pauses the release; coming back lets it carry on where it was."""

from __future__ import annotations

import pytest

from modelrelease.api.status import AnalysisRecord
from modelrelease.core.analysis import run_verdict, tally
from modelrelease_local.prometheus import PrometheusProcess
from tests.prometheus.analysis_helpers import analysis_spec, poll, run_once
from tests.prometheus.conftest import SCRAPE_INTERVAL, Live, provider_for

NOW = "2024-01-01T00:00:00Z"
TOTAL_CANARY_REQUESTS = 'sum(modelserver_requests_total{model="live-restart",track="canary"})'


def test_an_outage_pauses_and_never_rolls_back_then_runs_resume(
    live: Live, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prometheus = PrometheusProcess(
        tmp_path_factory.mktemp("prometheus-outage"), targets=live.targets(), scrape_interval=SCRAPE_INTERVAL
    )
    prometheus.start()
    provider = provider_for(prometheus, timeout=2.0)
    spec = analysis_spec(prometheus.url, "5s", consecutiveErrorLimit=2, failureLimit=0)
    variables = live.variables("live-restart")
    record = AnalysisRecord(version="v2")

    def one_run() -> str:
        """Every run counts, as in the operator, whatever its verdict."""
        nonlocal record
        _, records = run_once(provider, spec, variables)
        record, outcome = tally(record, records, spec, NOW)
        return outcome

    try:
        # A passing run first, so the counters have something to keep.
        outcome = poll(one_run, lambda _: record.last_run_passed, "a passing run before the outage")
        assert outcome == "continue"
        before = record
        requests_before = provider.query(TOTAL_CANARY_REQUESTS).value
        assert requests_before is not None and requests_before > 0

        prometheus.stop()
        outcomes = []
        for _ in range(spec.consecutive_error_limit + 1):
            measurements, records = run_once(provider, spec, variables)
            assert all(m.error and "unreachable" in m.error for m in measurements), measurements
            assert run_verdict(records) == "Error"
            record, outcome = tally(record, records, spec, NOW)
            outcomes.append(outcome)
            assert not record.last_run_passed
        assert outcomes == ["continue", "continue", "pause"]
        assert (record.successes, record.failures) == (before.successes, 0)

        prometheus.start()  # same port, same data directory
        assert prometheus.url == provider.url
        outcome = poll(one_run, lambda _: record.last_run_passed, "a passing run after the restart")

        assert outcome == "continue"
        assert record.consecutive_errors == 0 and record.failures == 0
        assert record.successes == before.successes + 1
        assert record.runs > before.runs + len(outcomes)
        # The data from before the outage survived the restart, and the counters carry on from it.
        requests_after = provider.query(TOTAL_CANARY_REQUESTS).value
        assert requests_after is not None and requests_after >= requests_before
    finally:
        provider.close()
        prometheus.stop()
