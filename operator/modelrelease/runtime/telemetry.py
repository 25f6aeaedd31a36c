"""The operator's metrics, read off what each pass changed in a release's status."""

from __future__ import annotations

from datetime import datetime

from modelrelease import metrics
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ModelReleaseStatus
from modelrelease.core.timestamps import parse_timestamp
from modelrelease.runtime.reconcile import PassResult

_ROLLBACK_PHASES = frozenset({"RollingBack", "RolledBack", "Failed"})


class PassObserver:
    """Keeps the per-release gauges and counters; one per operator process."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def passed(self, namespace: str, release: str, result: PassResult, now: datetime) -> None:
        status, previous = result.status, result.previous
        if status is None or previous is None:
            return
        if (namespace, release) not in self._phases:
            # Counters start at 0 for a release, so increase() sees its very first rollback.
            for reason in metrics.ROLLBACK_REASONS:
                metrics.ROLLBACKS.labels(namespace, release, reason)
        metrics.record_phase(namespace, release, status)
        self._phases[namespace, release] = status.phase
        metrics.count_phases(self._phases.values())
        self._analysis(namespace, release, previous, status)
        failure = status.failure
        if failure is not None and status.phase in _ROLLBACK_PHASES and (
                previous.failure is None or previous.failure.at != failure.at):
            metrics.ROLLBACKS.labels(namespace, release, failure.reason).inc()
        if result.spec is not None:
            self._training(namespace, release, previous, status, result.spec, now)

    def forget(self, namespace: str, release: str) -> None:
        self._phases.pop((namespace, release), None)
        metrics.count_phases(self._phases.values())
        metrics.forget(namespace, release)

    @staticmethod
    def _analysis(namespace: str, release: str, previous: ModelReleaseStatus, status: ModelReleaseStatus) -> None:
        run = status.analysis
        if run.last_run_at is None or run.last_run_at == previous.analysis.last_run_at:
            return
        for check in run.checks:
            metrics.ANALYSIS_RUNS.labels(namespace, release, check.name, check.verdict).inc()
            for track, value in (("canary", check.value), ("stable", check.stable_value)):
                if value is not None:
                    metrics.CHECK_VALUE.labels(namespace, release, check.name, track).set(value)

    @staticmethod
    def _training(namespace: str, release: str, previous: ModelReleaseStatus, status: ModelReleaseStatus,
                  spec: ModelReleaseSpec, now: datetime) -> None:
        for index, record in enumerate(status.stages):
            labels = (namespace, release, record.name)
            before = previous.stages[index] if index < len(previous.stages) else None
            if record.phase == "Training" and record.started_at:
                metrics.TRAINING_RUNNING.labels(*labels).set((now - parse_timestamp(record.started_at)).total_seconds())
                own = spec.stages[index].training if index < len(spec.stages) else None
                deadline = own.active_deadline_seconds if own and own.active_deadline_seconds else None
                metrics.TRAINING_DEADLINE.labels(*labels).set(deadline or spec.training.active_deadline_seconds)
            elif before is not None and before.phase == "Training":
                metrics.drop(metrics.TRAINING_RUNNING, labels)
                metrics.drop(metrics.TRAINING_DEADLINE, labels)
                if record.started_at and record.finished_at:
                    took = parse_timestamp(record.finished_at) - parse_timestamp(record.started_at)
                    outcome = "succeeded" if record.version is not None else "failed"
                    metrics.TRAINING_DURATION.labels(outcome).observe(took.total_seconds())

