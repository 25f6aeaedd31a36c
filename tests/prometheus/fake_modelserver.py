"""Stand-ins for the model servers' /metrics: the reference server's metric names and labels, no model.

One ``TrackExporter`` plays all pods of one track (stable or canary) on its own port. A ``TrafficDriver``
thread adds requests, latencies, confidences and feedback for each registered ``Workload`` every tick,
deterministically (fractions carry over between ticks), so rates follow the chosen ``Behaviour``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LABELS = ("model", "version", "track")
# The reference server's buckets (modelrelease_trainer.serving), repeated so these tests need no numpy.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = tuple(round(0.1 + 0.05 * i, 2) for i in range(19))


@dataclass
class Behaviour:
    """How one model version serves; change fields while the driver runs to change its metrics."""

    requests_per_second: float = 40.0
    error_share: float = 0.0
    latency_seconds: float = 0.012
    confidence: float = 0.9
    correct_share: float = 0.95


class TrackExporter:
    """An in-process HTTP server exposing model-server metrics for one track."""

    def __init__(self, track: str) -> None:
        self.track = track
        self.registry = CollectorRegistry()
        self.requests = Counter("modelserver_requests", "Predict requests by HTTP status.",
                                [*LABELS, "code"], registry=self.registry)
        self.duration = Histogram("modelserver_request_duration_seconds", "Predict latency.", LABELS,
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.confidence = Histogram("modelserver_prediction_confidence", "Top class probability.",
                                    LABELS, buckets=CONFIDENCE_BUCKETS, registry=self.registry)
        self.feedback = Counter("modelserver_feedback", "Predictions scored by feedback labels.",
                                [*LABELS, "outcome"], registry=self.registry)
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Workload:
    """One model version on one track, as the driver feeds it."""

    exporter: TrackExporter
    model: str
    version: str
    behaviour: Behaviour
    _carry: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Like the real server: every series exists at zero before the first request.
        labels = self.labels
        for code in ("200", "500"):
            self.exporter.requests.labels(**labels, code=code)
        self.exporter.duration.labels(**labels)
        self.exporter.confidence.labels(**labels)
        for outcome in ("correct", "incorrect"):
            self.exporter.feedback.labels(**labels, outcome=outcome)

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, "track": self.exporter.track}

    def _take(self, name: str, amount: float) -> int:
        """Whole events due now; the fraction waits for the next tick."""
        total = self._carry.get(name, 0.0) + amount
        whole = int(total)
        self._carry[name] = total - whole
        return whole

    def tick(self, seconds: float) -> None:
        b, e, labels = self.behaviour, self.exporter, self.labels
        requests = self._take("requests", b.requests_per_second * seconds)
        if requests == 0:
            return
        errors = min(requests, self._take("errors", requests * b.error_share))
        e.requests.labels(**labels, code="500").inc(errors)
        e.requests.labels(**labels, code="200").inc(requests - errors)
        duration, confidence = e.duration.labels(**labels), e.confidence.labels(**labels)
        for _ in range(requests):
            duration.observe(b.latency_seconds)
            confidence.observe(b.confidence)
        correct = min(requests, self._take("correct", requests * b.correct_share))
        e.feedback.labels(**labels, outcome="correct").inc(correct)
        e.feedback.labels(**labels, outcome="incorrect").inc(requests - correct)


class TrafficDriver:
    """A background thread that feeds every registered workload on a fixed tick."""

    def __init__(self, tick_seconds: float = 0.1) -> None:
        self.tick_seconds = tick_seconds
        self._workloads: list[Workload] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-driver", daemon=True)

    def add(self, exporter: TrackExporter, model: str, version: str, behaviour: Behaviour) -> Workload:
        workload = Workload(exporter, model, version, behaviour)
        with self._lock:
            self._workloads.append(workload)
        return workload

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_seconds):
            now = time.monotonic()
            elapsed, last = now - last, now  # a late tick catches up, so rates hold on a busy machine
            with self._lock:
                workloads = list(self._workloads)
            for workload in workloads:
                workload.tick(elapsed)
