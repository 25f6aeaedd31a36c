"""Replay a release's analysis over a past time range: what each run would have found and done.

Each run goes through exactly the operator's path (``core.measurement.build_request`` →
``runtime.measure.read_run`` → ``core.analysis.judge`` → ``core.analysis.tally``), with instant
queries evaluated at the run's time instead of now, so a backtest judges a spec the way the operator
would have. Stages and steps are not replayed: the canary version is held at one weight for the whole
range, and a run tells only whether the release would have advanced, waited, paused or rolled back.
Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from modelrelease.adapters.prometheus import QueryResult, RangeMetricsProvider
from modelrelease.api.base import parse_duration
from modelrelease.api.spec import AnalysisCheck, ModelReleaseSpec
from modelrelease.api.status import AnalysisRecord, CheckRecord, Verdict
from modelrelease.core import analysis
from modelrelease.core.measurement import ReleaseVariables, build_request
from modelrelease.core.timestamps import format_timestamp
from modelrelease.runtime.measure import read_run

Action = Literal["advance", "wait", "pause", "roll back"]
MAX_RUNS = 10_000
"""The most runs one backtest makes: each costs a few queries, and more would take hours."""


class TooManyRuns(ValueError):
    """The range holds more than MAX_RUNS runs."""


class History(Protocol):
    """Prometheus as it answered at a given time (``PrometheusProvider.at``)."""

    def at(self, time: datetime) -> RangeMetricsProvider: ...


@dataclass(frozen=True)
class Target:
    """The release and the two versions a backtest compares."""

    release: str
    namespace: str
    canary_version: str
    stable_version: str


@dataclass(frozen=True)
class RunResult:
    """One analysis run of the replay."""

    run: int
    """1-based, as the operator counts runs of one canary version."""
    at: datetime
    checks: tuple[CheckRecord, ...]
    verdict: Verdict
    score: float | None
    action: Action
    record: AnalysisRecord
    """The counters after this run (failures, inconclusive and error streaks)."""


@dataclass(frozen=True)
class Backtest:
    """Every run of a replay, and what they add up to."""

    target: Target
    checks: tuple[AnalysisCheck, ...]
    analysis_limits: tuple[int, int, int]
    """failureLimit, inconclusiveLimit, consecutiveErrorLimit: what the counters were held to."""
    start: datetime
    end: datetime
    interval: timedelta
    runs: tuple[RunResult, ...]
    unreachable: str | None = None
    """Why no query was answered at all (Prometheus unreachable); None when Prometheus answered."""

    @property
    def decided_by(self) -> RunResult | None:
        """The run that rolled back or paused the release, if one did."""
        return next((r for r in self.runs if r.action in ("roll back", "pause")), None)

    @property
    def passed(self) -> bool:
        """No run rolled back or paused, and at least one run passed."""
        return (self.unreachable is None and self.decided_by is None
                and any(r.verdict == "Pass" for r in self.runs))


def run_times(start: datetime, end: datetime, interval: timedelta) -> list[datetime]:
    """start + k * interval for k = 1, 2, ... up to end: the first run comes one interval after the canary
    started serving, as in the operator."""
    if interval <= timedelta(0):
        raise ValueError("the analysis interval must be positive")
    count = int((end - start) / interval) if end >= start else 0
    return [start + k * interval for k in range(1, count + 1)]


def action_of(outcome: analysis.Outcome, verdict: Verdict) -> Action:
    """What the release would have done after a run: a passing run lets a step end, anything short of a
    rollback or a pause only waits for the next run."""
    if outcome == "rollback":
        return "roll back"
    if outcome == "pause":
        return "pause"
    return "advance" if verdict == "Pass" else "wait"


class _Witness:
    """Passes queries through and remembers whether Prometheus was ever reached."""

    def __init__(self, provider: RangeMetricsProvider) -> None:
        self.provider = provider
        self.answered = False
        self.failure: str | None = None

    def query(self, promql: str) -> QueryResult:
        return self._seen(self.provider.query(promql))

    def query_range(self, promql: str, start: float | datetime, end: float | datetime,
                    step_seconds: float) -> QueryResult:
        return self._seen(self.provider.query_range(promql, start, end, step_seconds))

    def _seen(self, result: QueryResult) -> QueryResult:
        if getattr(result, "connection_failed", False):
            self.failure = result.error
        else:
            self.answered = True
        return result


def replay(spec: ModelReleaseSpec, target: Target, history: History, start: datetime, end: datetime) -> Backtest:
    """Run the spec's analysis at every interval from ``start`` (when the canary started serving) to
    ``end``; stop at the first rollback or pause, as the release would have."""
    interval = parse_duration(spec.analysis.interval)
    times = run_times(start, end, interval)
    if len(times) > MAX_RUNS:
        raise TooManyRuns(f"{len(times)} runs between start and end, more than {MAX_RUNS}: shorten the range "
                         "or raise spec.analysis.interval")
    by_name = {check.name: check for check in spec.analysis.checks}
    record = AnalysisRecord(version=target.canary_version, started_at=format_timestamp(start))
    runs: list[RunResult] = []
    reached = False
    unreachable: str | None = None
    for k, at in enumerate(times, start=1):
        witness = _Witness(history.at(at))
        variables = ReleaseVariables(
            release=target.release, namespace=target.namespace, model=spec.model.name,
            canary_version=target.canary_version, stable_version=target.stable_version, interval=interval,
            now=at, canary_since=start,
        )
        request = build_request(spec.analysis.checks, variables)
        measurements = read_run(witness, request).measurements()
        results = [analysis.judge(by_name[m.check], m, spec.analysis.min_sample_count, request.stable_serving, run=k,
                                  comparisons=analysis.deciding_comparisons(spec.analysis.checks))
                   for m in measurements]
        record, outcome = analysis.tally(record, results, spec.analysis, format_timestamp(at))
        verdict = analysis.run_verdict(results)
        runs.append(RunResult(k, at, tuple(results), verdict, record.score, action_of(outcome, verdict), record))
        reached = reached or witness.answered
        if not reached and witness.failure is not None:
            # Nothing was ever answered: the runs would only count errors against a server that is not there.
            unreachable = witness.failure
            break
        if outcome != "continue":
            break
    limits = (spec.analysis.failure_limit, spec.analysis.inconclusive_limit, spec.analysis.consecutive_error_limit)
    return Backtest(target, tuple(spec.analysis.checks), limits, start, end, interval, tuple(runs), unreachable)
