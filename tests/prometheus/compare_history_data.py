"""Recorded traffic with noise, for the statistical comparison: OpenMetrics with fixed timestamps.

Unlike ``history_data`` (exact counts, exact verdicts), every 15 s scrape here carries noise: how many
requests arrived, each request's latency (log-normal around the track's median), and which feedback
labels confirmed the prediction. The noise is pseudo-random from a seed per scenario and track, so the
series, and with them the verdicts, are the same on every run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.prometheus.fake_modelserver import LATENCY_BUCKETS

T0 = 1_704_153_600  # 2024-01-02T00:00:00Z
STEP = 15
END = T0 + 1800
CANARY_SINCE = T0 + 300
"""When every scenario's canary version started serving."""
NOW = T0 + 1500
"""When the analysis runs: 20 minutes of canary traffic behind it, more than a 10m window."""
INTERVAL_SECONDS = 30
VERSIONS = {"stable": "v1", "canary": "v2"}
LATENCY_SPREAD = 0.3
"""The sigma of log(latency): the 99th percentile is about twice the median."""


@dataclass(frozen=True)
class Traffic:
    """One track's traffic per 15 s scrape: the means the noise varies around."""

    requests: float = 150.0
    """Requests per scrape interval; below 1, one request every 1/requests intervals."""
    latency_median: float = 0.017
    """Seconds; its 99th percentile (about 0.034 s) lies inside a histogram bucket, not on a bound."""
    accuracy: float = 0.95
    """The chance that a prediction with feedback was correct."""
    feedback_share: float = 0.4
    """The share of requests whose prediction a feedback label scored."""


@dataclass(frozen=True)
class Scenario:
    model: str
    stable: Traffic = field(default_factory=Traffic)
    canary: Traffic = field(default_factory=Traffic)


SCENARIOS = {
    s.model: s
    for s in (
        # The canary is twice as slow and five points less accurate.
        Scenario("regression", canary=Traffic(latency_median=0.034, accuracy=0.90)),
        # The same traffic on both tracks; only the noise differs.
        Scenario("equal"),
        # The canary gets one request every ten minutes, each scored by feedback.
        Scenario("trickle", canary=Traffic(requests=1 / 40, feedback_share=1.0)),
    )
}


@dataclass
class _Counters:
    """A track's cumulative series at one scrape."""

    buckets: list[int]
    latency_sum: float = 0.0
    requests: int = 0
    correct: int = 0
    incorrect: int = 0


def _arrivals(traffic: Traffic, step: int, rng: random.Random) -> int:
    if traffic.requests < 1:
        every = round(1 / traffic.requests)
        return 1 if step % every == every // 2 else 0
    # About 10% either way around the mean, as a busy server's scrape intervals vary.
    return max(0, round(rng.gauss(traffic.requests, traffic.requests * 0.1)))


def _scrape(counters: _Counters, traffic: Traffic, step: int, rng: random.Random) -> None:
    for _ in range(_arrivals(traffic, step, rng)):
        latency = traffic.latency_median * math.exp(rng.gauss(0.0, LATENCY_SPREAD))
        counters.requests += 1
        counters.latency_sum += latency
        for index, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound:
                counters.buckets[index] += 1
        if rng.random() < traffic.feedback_share:
            if rng.random() < traffic.accuracy:
                counters.correct += 1
            else:
                counters.incorrect += 1


def _scrapes(model: str, track: str, traffic: Traffic) -> Iterator[tuple[int, _Counters]]:
    """Every scrape of one track, with the counters as they read then. A canary serves from CANARY_SINCE."""
    rng = random.Random(f"{model}/{track}")
    counters = _Counters(buckets=[0] * len(LATENCY_BUCKETS))
    first = CANARY_SINCE if track == "canary" else T0
    for ts in range(first, END + 1, STEP):
        if ts > first:
            _scrape(counters, traffic, (ts - first) // STEP, rng)
        yield ts, _Counters(list(counters.buckets), counters.latency_sum, counters.requests, counters.correct,
                            counters.incorrect)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def openmetrics() -> str:
    tracks = [
        (scenario.model, track, traffic, {"model": scenario.model, "version": VERSIONS[track], "track": track})
        for scenario in SCENARIOS.values()
        for track, traffic in (("stable", scenario.stable), ("canary", scenario.canary))
    ]
    recorded = {(model, track): list(_scrapes(model, track, traffic)) for model, track, traffic, _ in tracks}
    lines: list[str] = []
    duration = "modelserver_request_duration_seconds"
    lines.append(f"# TYPE {duration} histogram")
    for model, track, _, labels in tracks:
        scrapes = recorded[model, track]
        for index, bound in enumerate((*LATENCY_BUCKETS, math.inf)):
            le = "+Inf" if math.isinf(bound) else repr(bound)
            for ts, c in scrapes:
                count = c.requests if math.isinf(bound) else c.buckets[index]
                lines.append(f"{duration}_bucket{_labels({**labels, 'le': le})} {count} {ts}")
        lines += [f"{duration}_sum{_labels(labels)} {c.latency_sum!r} {ts}" for ts, c in scrapes]
        lines += [f"{duration}_count{_labels(labels)} {c.requests} {ts}" for ts, c in scrapes]
    lines.append("# TYPE modelserver_feedback counter")
    for model, track, _, labels in tracks:
        for outcome in ("correct", "incorrect"):
            lines += [
                f"modelserver_feedback_total{_labels({**labels, 'outcome': outcome})} {getattr(c, outcome)} {ts}"
                for ts, c in recorded[model, track]
            ]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def feedback_between(model: str, track: str, start: int, end: int) -> int:
    """How many predictions feedback scored in (start, end]: the trials a proportions test counts."""
    scenario = SCENARIOS[model]
    scrapes = dict(_scrapes(model, track, getattr(scenario, track)))

    def scored(ts: int) -> int:
        at = scrapes.get(ts)
        return 0 if at is None else at.correct + at.incorrect

    return scored(end) - scored(start)


def write(path: Path) -> Path:
    path.write_text(openmetrics())
    return path
