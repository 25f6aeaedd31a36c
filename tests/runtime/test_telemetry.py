"""The operator's metrics as each pass leaves them (read from the process's default registry)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from modelrelease.adapters.prometheus import QueryResult
from modelrelease.runtime.telemetry import PassObserver
from tests.runtime.test_reconcile import NAME, NS, T0, Release, analysed_spec


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_rollback_pass_counts_once_and_forgetting_drops_the_series() -> None:
    release = Release(analysed_spec())
    start = release.to_canary()
    observer = PassObserver()
    labels = {"namespace": NS, "release": NAME}
    before = sample("modelrelease_rollbacks_total", **labels, reason="AnalysisFailed") or 0.0
    release.providers.answer = lambda q: QueryResult.of(
        0.5 if q.startswith("error_rate") else 500 if q.startswith("requests") else 0.2)
    now = start + timedelta(seconds=30)
    observer.passed(NS, NAME, release.reconcile(now), now)
    observer.passed(NS, NAME, release.reconcile(now + timedelta(seconds=1)), now)
    assert sample("modelrelease_rollbacks_total", **labels, reason="AnalysisFailed") == before + 1
    assert sample("modelrelease_analysis_runs_total", **labels, check="errors", verdict="Fail") == 1
    assert sample("modelrelease_analysis_check_value", **labels, check="latency", track="stable") == 0.2
    assert sample("modelrelease_release_phase", **labels, phase=release.status["phase"]) == 1
    assert sample("modelrelease_release_phase", **labels, phase="Progressing") == 0
    assert sample("modelrelease_canary_weight", **labels) == 0

    observer.forget(NS, NAME)
    assert sample("modelrelease_release_phase", **labels, phase="Progressing") is None
    assert sample("modelrelease_rollbacks_total", **labels, reason="AnalysisFailed") is None


def test_a_running_training_job_shows_its_age_and_deadline() -> None:
    release = Release(analysed_spec())
    observer = PassObserver()
    observer.passed(NS, "digits-training", release.reconcile(T0), T0 + timedelta(seconds=90))
    labels = {"namespace": NS, "release": "digits-training", "stage": "warmup"}
    assert sample("modelrelease_training_job_running_seconds", **labels) == 90
    assert sample("modelrelease_training_job_deadline_seconds", **labels) == 3600  # the default deadline
