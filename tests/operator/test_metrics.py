"""The operator's own metrics, scraped by a real Prometheus through a whole release and read back."""

from __future__ import annotations

import pathlib

import requests

from modelrelease.metrics import METRIC_NAMES
from modelrelease_local.ports import free_port
from modelrelease_local.prometheus import PrometheusProcess, ScrapeTarget
from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for


def instant(prometheus: PrometheusProcess, promql: str) -> list[dict]:  # type: ignore[type-arg]
    answer = requests.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def value(prometheus: PrometheusProcess, promql: str) -> float | None:
    result = instant(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_reads_the_release_back_from_the_operators_metrics(harness: Harness,
                                                                      tmp_path: pathlib.Path) -> None:
    port = free_port()
    harness.kill_operator()
    harness.start_operator("--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    harness.training.delay = 3.0  # every phase outlasts a few scrapes
    spec = release_spec(harness.prometheus.url)
    for stage in spec["stages"]:
        for step in stage["steps"]:
            step["duration"] = "3s"
    prometheus = PrometheusProcess(tmp_path / "prometheus", targets=[ScrapeTarget(f"127.0.0.1:{port}", job="operator")],
                                   scrape_interval=0.5)
    prometheus.start()
    try:
        wait_for(lambda: value(prometheus, 'up{job="operator"}') == 1, "Prometheus to scrape the operator")
        harness.apply("digits", spec)
        harness.wait_phase("digits", "Released", timeout=180)
        series = 'modelrelease_release_phase{namespace="default",release="digits",phase="Released"}'
        wait_for(lambda: value(prometheus, series) == 1, "the Released phase to be scraped")

        # The phase transitions, read back from the series' history.
        def ever(phase: str) -> float | None:
            series = f'modelrelease_release_phase{{release="digits",phase="{phase}"}}'
            return value(prometheus, f"max_over_time({series}[10m])")

        assert [ever(phase) for phase in ("Training", "Progressing", "Released", "RolledBack")] == [1, 1, 1, 0]
        weights = value(prometheus, 'changes(modelrelease_canary_weight{release="digits"}[10m])')
        assert weights is not None and weights >= 3
        assert value(prometheus, 'modelrelease_releases{phase="Released"}') == 1
        assert (value(prometheus, 'sum(modelrelease_analysis_runs_total{release="digits",verdict="Pass"})') or 0) > 0
        assert value(prometheus, 'sum(modelrelease_analysis_runs_total{release="digits",verdict="Fail"})') is None
        assert value(prometheus, "modelrelease_training_job_duration_seconds_count") == 3
        assert (value(prometheus, 'sum(modelrelease_reconcile_passes_total{result="ok"})') or 0) > 0
        assert (value(prometheus, 'sum(modelrelease_api_requests_total{verb="PATCH"})') or 0) > 0
        assert value(prometheus, "sum(modelrelease_rollbacks_total)") == 0  # there, at 0, for increase()

        # Every documented series is exported.
        names = {r["metric"]["__name__"] for r in instant(prometheus, '{__name__=~"modelrelease_.*"}')}
        exported = {n.removesuffix("_count").removesuffix("_sum").removesuffix("_bucket") for n in names}
        assert set(METRIC_NAMES) - {"modelrelease_rollbacks_total", "modelrelease_training_job_running_seconds",
                                    "modelrelease_training_job_deadline_seconds"} <= exported
    finally:
        prometheus.stop()
