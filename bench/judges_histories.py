"""Traffic histories for bench/judges.py: the model server's series, with noise, as OpenMetrics.

Each history is a canary and a stable track serving one model for INTERVALS analysis intervals of
INTERVAL seconds, scraped every SCRAPE seconds. Both tracks start at T0 (the canary's first request),
so a counter's value is the count since the canary started. Noise, per scrape and per track: Poisson
request counts (the total split by the canary's weight), binomial errors, binomial feedback (a share
of requests gets a label) and binomial correct answers among it, and one log-normal latency per
request, counted into the server's histogram buckets. Every seed of every history goes into the same
text, told apart by the ``model`` label (``{history}-s{seed}``), so one promtool import and one
Prometheus serve them all.

Imported by bench/judges.py; run on its own it does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z, on a 2 h block boundary: the import makes one block
SCRAPE = 15
INTERVAL = 60
INTERVALS = 30
STEPS = INTERVALS * INTERVAL // SCRAPE
"""Scrapes after T0; the scrape at T0 reads every counter at 0."""
VERSIONS = {"stable": "v1", "canary": "v2"}

# The reference model server's buckets (tests/prometheus/fake_modelserver.py), kept equal by hand:
# the bench must not import the test tree's HTTP exporter to write text.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MEDIAN_LATENCY = 0.02
LATENCY_SPREAD = 0.5
"""sigma of log(latency): p99 is about 3.2 times the median (64 ms)."""
FEEDBACK_SHARE = 0.5
"""The share of requests that a feedback label scores later."""


@dataclass(frozen=True)
class Track:
    """How one track serves: its true error rate, accuracy and latency scale (growing for a drift)."""

    error_rate: float = 0.01
    accuracy: float = 0.90
    latency_scale: float = 1.0
    latency_growth: float = 0.0
    """Relative latency growth per analysis interval (0.03: 3% per interval, compounded)."""


@dataclass(frozen=True)
class History:
    name: str
    weight: float
    """The canary's share of the requests, 0 to 1."""
    canary: Track = field(default_factory=Track)
    stable: Track = field(default_factory=Track)
    requests_per_second: float = 20.0
    """Both tracks together."""
    regression: bool = False
    """Whether a judge should roll it back (a regression or the drift), or not (a false rollback)."""
    scrape_miss: float = 0.0
    """The chance that one scrape of one track is missing."""
    outage: tuple[int, int] | None = None
    """Scrape steps (first, last) in which the canary's exporter was not scraped at all."""

    def model(self, seed: int) -> str:
        return f"{self.name}-s{seed}"


HISTORIES: tuple[History, ...] = (
    History("latency-x2-w10", 0.1, Track(latency_scale=2.0), regression=True),
    History("latency-x2-w50", 0.5, Track(latency_scale=2.0), regression=True),
    History("errors+2pt-w10", 0.1, Track(error_rate=0.03), regression=True),
    History("errors+2pt-w50", 0.5, Track(error_rate=0.03), regression=True),
    History("accuracy-5pt-w10", 0.1, Track(accuracy=0.85), regression=True),
    History("accuracy-5pt-w50", 0.5, Track(accuracy=0.85), regression=True),
    History("drift-3pct-w10", 0.1, Track(latency_growth=0.03), regression=True),
    History("equal-w10", 0.1),
    History("equal-w50", 0.5),
    History("low-traffic-w10", 0.1, requests_per_second=0.5),
    History("gappy-w10", 0.1, scrape_miss=0.1, outage=(8 * 4, 11 * 4)),
)


@dataclass(frozen=True)
class TrackSeries:
    """Cumulative counters of one track at every scrape step 0..STEPS (index = step)."""

    ok: np.ndarray
    errors: np.ndarray
    buckets: np.ndarray
    """Shape (len(LATENCY_BUCKETS) + 1, STEPS + 1): cumulative counts per le, +Inf last."""
    correct: np.ndarray
    incorrect: np.ndarray
    present: np.ndarray
    """Whether the exporter was scraped at each step."""


def simulate(history: History, track: str, rng: np.random.Generator) -> TrackSeries:
    serving = history.canary if track == "canary" else history.stable
    share = history.weight if track == "canary" else 1.0 - history.weight
    requests = rng.poisson(history.requests_per_second * SCRAPE * share, STEPS)
    errors = rng.binomial(requests, serving.error_rate)
    scored = rng.binomial(requests, FEEDBACK_SHARE)
    correct = rng.binomial(scored, serving.accuracy)
    per_step = np.zeros((len(LATENCY_BUCKETS) + 1, STEPS), dtype=np.int64)
    bounds = np.asarray(LATENCY_BUCKETS)
    for step, count in enumerate(requests):
        intervals_in = (step + 1) * SCRAPE / INTERVAL
        scale = serving.latency_scale * (1.0 + serving.latency_growth) ** intervals_in
        latencies = rng.lognormal(math.log(MEDIAN_LATENCY * scale), LATENCY_SPREAD, count)
        # side="left": a latency equal to a bound belongs to that bound's bucket (le means <=).
        per_step[:, step] = np.bincount(np.searchsorted(bounds, latencies, side="left"),
                                        minlength=len(bounds) + 1)
    present = rng.random(STEPS + 1) >= history.scrape_miss
    if track == "canary" and history.outage is not None:
        present[history.outage[0]:history.outage[1] + 1] = False
    present[0] = True  # the series exist from the start, as a server's do after its first scrape

    def cumulative(values: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((*values.shape[:-1], 1), dtype=np.int64), np.cumsum(values, axis=-1)],
                              axis=-1)

    return TrackSeries(cumulative(requests - errors), cumulative(errors),
                       np.cumsum(cumulative(per_step), axis=0), cumulative(correct),
                       cumulative(scored - correct), present)


def _labels(model: str, track: str, **extra: str) -> str:
    labels = {"model": model, "version": VERSIONS[track], "track": track, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _series(name: str, labels: str, values: np.ndarray, present: np.ndarray) -> Iterator[str]:
    for step in np.flatnonzero(present):
        yield f"{name}{labels} {int(values[step])} {T0 + SCRAPE * int(step)}"


def openmetrics(seeds: int, base_seed: int) -> Iterator[str]:
    """The text for every history and seed, family by family (OpenMetrics does not interleave them)."""
    simulated: list[tuple[str, str, TrackSeries]] = []
    for number, history in enumerate(HISTORIES):
        for seed in range(seeds):
            rng = np.random.default_rng([base_seed, number, seed])
            for track in ("stable", "canary"):
                simulated.append((history.model(seed), track, simulate(history, track, rng)))
    yield "# TYPE modelserver_requests counter"
    for model, track, s in simulated:
        yield from _series("modelserver_requests_total", _labels(model, track, code="200"), s.ok, s.present)
        yield from _series("modelserver_requests_total", _labels(model, track, code="500"), s.errors, s.present)
    yield "# TYPE modelserver_request_duration_seconds histogram"
    for model, track, s in simulated:
        for index, le in enumerate((*LATENCY_BUCKETS, math.inf)):
            bound = "+Inf" if math.isinf(le) else repr(le)
            yield from _series("modelserver_request_duration_seconds_bucket", _labels(model, track, le=bound),
                               s.buckets[index], s.present)
        yield from _series("modelserver_request_duration_seconds_count", _labels(model, track),
                           s.buckets[-1], s.present)
    yield "# TYPE modelserver_feedback counter"
    for model, track, s in simulated:
        yield from _series("modelserver_feedback_total", _labels(model, track, outcome="correct"), s.correct,
                           s.present)
        yield from _series("modelserver_feedback_total", _labels(model, track, outcome="incorrect"),
                           s.incorrect, s.present)
    yield "# EOF"


def write(path: Path, seeds: int, base_seed: int) -> Path:
    with path.open("w") as file:
        for line in openmetrics(seeds, base_seed):
            file.write(line)
            file.write("\n")
    return path
