"""The operator's own Prometheus metrics (served on --metrics-port), named once here.

The chart's alert rules and Grafana dashboard query these names; tests hold them together.
Per-release series carry `namespace` and `release` labels and are removed when the release is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrelease.api.status import PHASES, ModelReleaseStatus

PREFIX = "modelrelease"

RECONCILE_PASSES = Counter(
    f"{PREFIX}_reconcile_passes",
    "Reconcile passes, by result: ok, conflict (stale write, re-read soon), throttled (the API server asked to"
    " wait), error.", ["result"])
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds", "Time one reconcile pass took (observe, plan, execute, status).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RELEASES = Gauge(f"{PREFIX}_releases", "ModelReleases this operator drives, by phase.", ["phase"])
RELEASE_PHASE = Gauge(
    f"{PREFIX}_release_phase", "1 for the phase a release is in, 0 for the others.",
    ["namespace", "release", "phase"])
CANARY_WEIGHT = Gauge(f"{PREFIX}_canary_weight", "The canary's weight, in percent.", ["namespace", "release"])
ANALYSIS_RUNS = Counter(
    f"{PREFIX}_analysis_runs", "Analysis checks judged, by check and verdict (Pass, Fail, Inconclusive, Error).",
    ["namespace", "release", "check", "verdict"])
CHECK_VALUE = Gauge(
    f"{PREFIX}_analysis_check_value", "The last value a check read, for the canary and (relative checks) the stable.",
    ["namespace", "release", "check", "track"])
ROLLBACK_REASONS = ("TrainingFailed", "GateFailed", "AnalysisFailed", "Aborted")
ROLLBACKS = Counter(
    f"{PREFIX}_rollbacks", "Rollbacks, by reason (TrainingFailed, GateFailed, AnalysisFailed, Aborted).",
    ["namespace", "release", "reason"])
TRAINING_DURATION = Histogram(
    f"{PREFIX}_training_job_duration_seconds", "How long finished training Jobs ran, by outcome.", ["outcome"],
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200))
TRAINING_RUNNING = Gauge(
    f"{PREFIX}_training_job_running_seconds", "How long the current stage's training Job has been running.",
    ["namespace", "release", "stage"])
TRAINING_DEADLINE = Gauge(
    f"{PREFIX}_training_job_deadline_seconds", "The running training Job's activeDeadlineSeconds.",
    ["namespace", "release", "stage"])
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests", "Requests the operator made to the Kubernetes API, by verb and HTTP code.",
    ["verb", "code"])

PER_RELEASE = (RELEASE_PHASE, CANARY_WEIGHT, ANALYSIS_RUNS, CHECK_VALUE, ROLLBACKS, TRAINING_RUNNING,
               TRAINING_DEADLINE)
METRIC_NAMES = (
    "modelrelease_reconcile_passes_total", "modelrelease_reconcile_duration_seconds",
    "modelrelease_releases", "modelrelease_release_phase", "modelrelease_canary_weight",
    "modelrelease_analysis_runs_total", "modelrelease_analysis_check_value", "modelrelease_rollbacks_total",
    "modelrelease_training_job_duration_seconds", "modelrelease_training_job_running_seconds",
    "modelrelease_training_job_deadline_seconds", "modelrelease_api_requests_total",
)
"""The series names as Prometheus sees them (counters gain _total), for the chart's rules and dashboard."""


def serve(port: int, address: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:
    """Serve /metrics from a background thread."""
    start_http_server(port, addr=address, registry=registry)


def record_phase(namespace: str, release: str, status: ModelReleaseStatus) -> None:
    for phase in PHASES:
        RELEASE_PHASE.labels(namespace, release, phase).set(1 if status.phase == phase else 0)
    CANARY_WEIGHT.labels(namespace, release).set(status.canary_weight)


def count_phases(phases: Iterable[str]) -> None:
    counted: dict[str, int] = dict.fromkeys(PHASES, 0)
    for phase in phases:
        counted[phase] = counted.get(phase, 0) + 1
    for phase, count in counted.items():
        RELEASES.labels(phase).set(count)


def forget(namespace: str, release: str) -> None:
    """Drop a deleted release's series, so that the operator's memory does not grow with churn."""
    for metric in PER_RELEASE:
        # prometheus_client keeps the children by label values; there is no public iterator over them.
        for labels in [tuple(values) for values in metric._metrics]:
            if labels[:2] == (namespace, release):
                drop(metric, labels)


def drop(metric: Gauge | Counter, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
