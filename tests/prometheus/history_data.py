"""Recorded model-server series with fixed timestamps, written as OpenMetrics for promtool to import.

Every counter grows by a whole number per 15 s step, and queries are evaluated at a step boundary with
a 60 s range, so rate() and increase() are exact and the verdicts are fixed numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.prometheus.fake_modelserver import LATENCY_BUCKETS

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
STEP = 15
END = T0 + 900
EVALUATED_AT = T0 + 600
INTERVAL_SECONDS = 60


def _always(_: int) -> bool:
    return True


@dataclass(frozen=True)
class Serving:
    """One model version's traffic per 15 s step."""

    ok: int = 150
    errors: int = 0
    latency: float = 0.02
    confidence: float = 0.9
    correct: int = 57
    incorrect: int = 3
    present: Callable[[int], bool] = _always
    """Whether the exporter was scraped at a timestamp (False makes a gap)."""
    nan_confidence_from: int | None = None
    """From this timestamp on, the confidence sum reads NaN (a broken exporter)."""


@dataclass(frozen=True)
class Scenario:
    model: str
    stable: Serving = field(default_factory=Serving)
    canary: Serving = field(default_factory=Serving)


SCENARIOS = {
    s.model: s
    for s in (
        Scenario("steady"),
        Scenario("failing", canary=Serving(ok=120, errors=30, latency=0.09, confidence=0.6, correct=40,
                                           incorrect=20)),
        Scenario("quiet", canary=Serving(ok=3, correct=2, incorrect=0)),
        Scenario("gappy", canary=Serving(present=lambda ts: not T0 + 450 < ts < T0 + 660)),
        Scenario("nan", canary=Serving(nan_confidence_from=T0 + 300)),
    )
}
VERSIONS = {"stable": "v1", "canary": "v2"}


def _series() -> Iterator[tuple[str, str, Serving, dict[str, str]]]:
    for scenario in SCENARIOS.values():
        for track, serving in (("stable", scenario.stable), ("canary", scenario.canary)):
            yield scenario.model, track, serving, {
                "model": scenario.model, "version": VERSIONS[track], "track": track
            }


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def _points(serving: Serving, per_step: Callable[[int], float]) -> Iterator[tuple[int, float]]:
    """(timestamp, cumulative value) at each step the exporter was scraped."""
    for step in range((END - T0) // STEP + 1):
        ts = T0 + step * STEP
        if serving.present(ts):
            yield ts, per_step(ts) * step


def _family(lines: list[str], name: str, kind: str, samples: Iterator[tuple[str, dict[str, str], Serving,
                                                                                 Callable[[int], float]]]) -> None:
    lines.append(f"# TYPE {name} {kind}")
    for sample_name, labels, serving, per_step in samples:
        for ts, value in _points(serving, per_step):
            lines.append(f"{sample_name}{_labels(labels)} {_number(value)} {ts}")


def openmetrics() -> str:
    lines: list[str] = []
    series = list(_series())

    def const(value: float) -> Callable[[int], float]:
        return lambda _ts: value

    _family(lines, "modelserver_requests", "counter", (
        (name, {**labels, "code": code}, s, const(count))
        for _, _, s, labels in series
        for name, code, count in (("modelserver_requests_total", "200", s.ok),
                                  ("modelserver_requests_total", "500", s.errors))
    ))
    duration = "modelserver_request_duration_seconds"
    lines.append(f"# TYPE {duration} histogram")
    for _, _, s, labels in series:
        total = s.ok + s.errors
        for le in (*LATENCY_BUCKETS, math.inf):
            bound = "+Inf" if math.isinf(le) else repr(le)
            in_bucket = total if s.latency <= le else 0
            for ts, value in _points(s, const(in_bucket)):
                lines.append(f"{duration}_bucket{_labels({**labels, 'le': bound})} {_number(value)} {ts}")
        for ts, value in _points(s, const(total * s.latency)):
            lines.append(f"{duration}_sum{_labels(labels)} {_number(value)} {ts}")
        for ts, value in _points(s, const(total)):
            lines.append(f"{duration}_count{_labels(labels)} {_number(value)} {ts}")
    confidence = "modelserver_prediction_confidence"
    lines.append(f"# TYPE {confidence} summary")  # only _sum and _count are queried
    for _, _, s, labels in series:
        total = s.ok + s.errors

        def confidence_sum(ts: int, s: Serving = s, total: int = total) -> float:
            broken = s.nan_confidence_from is not None and ts >= s.nan_confidence_from
            return math.nan if broken else total * s.confidence

        for ts, value in _points(s, confidence_sum):
            lines.append(f"{confidence}_sum{_labels(labels)} {_number(value)} {ts}")
        for ts, value in _points(s, const(total)):
            lines.append(f"{confidence}_count{_labels(labels)} {_number(value)} {ts}")
    _family(lines, "modelserver_feedback", "counter", (
        ("modelserver_feedback_total", {**labels, "outcome": outcome}, s, const(count))
        for _, _, s, labels in series
        for outcome, count in (("correct", s.correct), ("incorrect", s.incorrect))
    ))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def write(path: Path) -> Path:
    path.write_text(openmetrics())
    return path
