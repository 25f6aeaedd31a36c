"""What one analysis run asks Prometheus, and what its raw answers mean: the pure half of analysis.

The core decides whether a run is due, which checks it has, the rendered PromQL for the canary and
(only when the stable serves) for the stable, and the sample queries: a ``MeasurementRequest``. The
runtime only sends those queries and hands back a ``Reading`` per query, with an explicit no-data
state. Turning readings into ``Measurement`` values (``measurement_of``) is done here again, so every
rule about what an answer means lives in the core, beside ``analysis.judge`` that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from modelrelease.api.base import parse_duration
from modelrelease.api.spec import AnalysisCheck, ModelReleaseSpec
from modelrelease.api.status import ANALYSING_PHASES, ModelReleaseStatus
from modelrelease.core.analysis import ComparisonInput, Measurement, bounds_of
from modelrelease.core.timestamps import parse_timestamp
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import format_range, render

Role = Literal["canary", "stable", "samples", "compare-canary", "compare-stable", "compare-canary-trials",
               "compare-stable-trials"]
ROLES: tuple[Role, ...] = ("canary", "stable", "samples")
"""The bound queries of a check, in the order they are sent; the runtime stops a check at its first error."""
COMPARE_ROLES: tuple[Role, ...] = ("compare-canary", "compare-stable", "compare-canary-trials",
                                   "compare-stable-trials")
"""The comparison's queries: ranges of samples (mann-whitney), or rates and trial counts (proportions)."""


@dataclass(frozen=True)
class Reading:
    """One query's answer: a finite number, no data (empty, NaN, ±Inf), or an error."""

    value: float | None = None
    error: str | None = None
    note: str = ""
    """Why there is no data, for people ("empty result", "NaN")."""
    samples: tuple[float, ...] | None = None
    """A range query's finite values, every series at every step (None for an instant query)."""
    buckets: tuple[tuple[float, float], ...] | None = None
    """A histogram's (upper bound, cumulative count) pairs by ``le``, ascending (a bucket query's answer)."""

    @classmethod
    def of(cls, value: float) -> Self:
        return cls(value=value)

    @classmethod
    def of_samples(cls, samples: Sequence[float]) -> Self:
        return cls(samples=tuple(samples))

    @classmethod
    def no_data(cls, note: str = "") -> Self:
        return cls(note=note)

    @classmethod
    def failure(cls, error: str) -> Self:
        return cls(error=error)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ReleaseVariables:
    """What a release fills into query templates."""

    release: str
    namespace: str
    model: str
    canary_version: str
    stable_version: str | None
    """None when the stable serves nothing (no stable yet, or weight 100): no stable query is sent."""
    interval: timedelta
    """The range of rate()/increase() in queries; normally the analysis interval."""
    now: datetime | None = None
    """When the run reads (the end of a comparison's window); needed only by checks with compare."""
    canary_since: datetime | None = None
    """When the canary version started serving: a comparison's window never reaches before it."""

    def compare_window(self, check: AnalysisCheck) -> timedelta:
        """How far back this check's comparison looks now: its window, not before the canary started,
        never less than one interval."""
        assert check.compare is not None
        window = parse_duration(check.compare.window)
        if self.now is not None and self.canary_since is not None:
            window = min(window, self.now - self.canary_since)
        return max(window, self.interval)

    def values(self, track: str, version: str) -> dict[str, str]:
        return {
            "release": self.release,
            "namespace": self.namespace,
            "model": self.model,
            "version": version,
            "track": track,
            "interval": format_range(self.interval.total_seconds()),
        }


@dataclass(frozen=True)
class CheckQueries:
    """A check's templates, with a preset's filled in where the check sets none of its own."""

    query: str
    sample_query: str | None
    buckets_query: str | None = None
    """For a comparison on a histogram's buckets: the preset's bucket query, or the check's own query."""


def queries_of(check: AnalysisCheck) -> CheckQueries:
    if check.preset is not None:
        preset = PRESETS[check.preset]
        return CheckQueries(preset.query, check.sample_query or preset.sample_query, preset.buckets_query)
    if check.query is None:
        raise ValueError(f"check {check.name} has neither a preset nor a query")
    return CheckQueries(check.query, check.sample_query, check.query)


@dataclass(frozen=True)
class RangeWindow:
    """The span and resolution of a range query."""

    start: datetime
    end: datetime
    step_seconds: float


@dataclass(frozen=True)
class Ask:
    """One query of a run: an instant query, a range query when ``window`` is set, or an instant query
    for a histogram's buckets when ``buckets`` is set."""

    role: Role
    promql: str
    window: RangeWindow | None = None
    buckets: bool = False


@dataclass(frozen=True)
class RenderedCheck:
    """The PromQL one check sends in one run, by role (also what users are shown as asked)."""

    canary: str | None
    """The bound query; None for a check that only compares."""
    stable: str | None
    samples: str | None
    comparison: tuple[Ask, ...] = ()
    """The comparison's queries (roles compare-*), empty without compare or when the stable serves nothing."""

    def by_role(self) -> list[Ask]:
        pairs: list[tuple[Role, str | None]] = [
            ("canary", self.canary), ("stable", self.stable), ("samples", self.samples)]
        return [Ask(role, query) for role, query in pairs if query is not None] + list(self.comparison)


def render_check(check: AnalysisCheck, variables: ReleaseVariables) -> RenderedCheck:
    queries = queries_of(check)
    canary_values = variables.values("canary", variables.canary_version)
    has_bounds = bounds_of(check).any
    stable = None
    if has_bounds and bounds_of(check).relative and variables.stable_version is not None:
        stable = render(queries.query, variables.values("stable", variables.stable_version))
    samples = render(queries.sample_query, canary_values) if queries.sample_query and has_bounds else None
    canary = render(queries.query, canary_values) if has_bounds else None
    return RenderedCheck(canary, stable, samples, _render_comparison(check, queries, variables))


def _render_comparison(check: AnalysisCheck, queries: CheckQueries, variables: ReleaseVariables) -> tuple[Ask, ...]:
    if check.compare is None or variables.stable_version is None:
        return ()
    window = variables.compare_window(check)
    tracks = (("canary", variables.canary_version), ("stable", variables.stable_version))
    if check.compare.test == "proportions":
        # One instant query per rate and per trial count, with the window as the range of rate() and
        # increase(): the counts of everything the window saw.
        assert queries.sample_query is not None  # the spec's validation guarantees it
        widened = replace(variables, interval=window)
        asks = [Ask(f"compare-{track}", render(queries.query, widened.values(track, version)))  # type: ignore[arg-type]
                for track, version in tracks]
        asks += [Ask(f"compare-{track}-trials",  # type: ignore[arg-type]
                     render(queries.sample_query, widened.values(track, version)))
                 for track, version in tracks]
        return tuple(asks)
    if check.compare.samples == "histogram":
        # Every observation the window saw is a sample: the buckets' increases over the window.
        widened = replace(variables, interval=window)
        template = queries.buckets_query
        assert template is not None  # the spec's validation guarantees it
        return tuple(Ask(f"compare-{track}", render(template, widened.values(track, version)), buckets=True)  # type: ignore[arg-type]
                     for track, version in tracks)
    if variables.now is None:
        raise ValueError(f"check {check.name}: a mann-whitney comparison needs the time of the run")
    # By default one sample per interval and series: a query's rate() covers one interval, so samples
    # closer together share data, and a U test on overlapping samples claims more certainty than it has.
    step = (parse_duration(check.compare.step).total_seconds() if check.compare.step
            else max(1.0, variables.interval.total_seconds()))
    span = RangeWindow(variables.now - window, variables.now, step)
    return tuple(Ask(f"compare-{track}", render(queries.query, variables.values(track, version)), span)  # type: ignore[arg-type]
                 for track, version in tracks)


@dataclass(frozen=True)
class CheckRequest:
    check: str
    queries: RenderedCheck


@dataclass(frozen=True)
class MeasurementRequest:
    """One analysis run as the core wants it: the queries to send, in the spec's check order."""

    checks: tuple[CheckRequest, ...]
    stable_serving: bool
    """Whether the stable track serves traffic (below weight 100): relative bounds apply only then.
    Decided once here, for both the queries and the verdicts."""


CheckReadings = Mapping[Role, Reading]
"""The answers for one check, by role; a role is absent when it was not asked (or not reached)."""


def stable_serving(status: ModelReleaseStatus) -> bool:
    """The stable has pods to compare with only below weight 100 (and once something was released)."""
    return status.stable is not None and status.canary_weight < 100


def next_analysis_at(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> datetime:
    interval = parse_duration(spec.analysis.interval)
    since = status.analysis.last_run_at or status.analysis.started_at
    if since is None:
        return datetime.min.replace(tzinfo=UTC)
    return parse_timestamp(since) + interval


def analysis_due(spec: ModelReleaseSpec, status: ModelReleaseStatus, now: datetime) -> bool:
    """Whether a run is due now: a canary under analysis, not paused, one interval after the last."""
    if status.canary is None or not spec.analysis.checks or spec.paused:
        return False
    if status.phase not in ANALYSING_PHASES:
        return False
    return now >= next_analysis_at(spec, status)


def request_measurements(
    spec: ModelReleaseSpec, status: ModelReleaseStatus, now: datetime, *, release: str, namespace: str
) -> MeasurementRequest | None:
    """The run to make now, or None when none is due."""
    if not analysis_due(spec, status, now) or status.canary is None:
        return None
    variables = ReleaseVariables(
        release=release,
        namespace=namespace,
        model=spec.model.name,
        canary_version=status.canary.id,
        stable_version=status.stable.id if stable_serving(status) and status.stable else None,
        interval=parse_duration(spec.analysis.interval),
        now=now,
        canary_since=parse_timestamp(status.analysis.started_at) if status.analysis.started_at else None,
    )
    return build_request(spec.analysis.checks, variables)


def build_request(checks: Sequence[AnalysisCheck], variables: ReleaseVariables) -> MeasurementRequest:
    """The queries of a run for these variables; the stable serves exactly when it has a version."""
    rendered = tuple(CheckRequest(c.name, render_check(c, variables)) for c in checks)
    return MeasurementRequest(rendered, stable_serving=variables.stable_version is not None)


def comparison_of(readings: CheckReadings) -> ComparisonInput | None:
    """What the comparison's answers say, or None when none was asked (no compare, or no stable)."""
    asked = {role: readings[role] for role in COMPARE_ROLES if role in readings}
    if not asked:
        return None
    for role, reading in asked.items():
        if not reading.ok:
            return ComparisonInput(error=f"{role.removeprefix('compare-').replace('-', ' ')} query: {reading.error}")
    canary, stable = asked.get("compare-canary"), asked.get("compare-stable")
    if canary is None or stable is None:
        return ComparisonInput(error="the comparison's queries were not all answered")
    if canary.buckets is not None or stable.buckets is not None:
        return ComparisonInput(canary_buckets=canary.buckets or (), stable_buckets=stable.buckets or ())
    if "compare-canary-trials" in asked:
        # A trial count that finds no series is no traffic (0), as for the sample query.
        trials = tuple(r.value if r.value is not None else 0.0
                       for r in (asked["compare-canary-trials"], asked.get("compare-stable-trials", Reading())))
        return ComparisonInput(canary_rate=canary.value, stable_rate=stable.value,
                               canary_trials=trials[0], stable_trials=trials[1])
    return ComparisonInput(canary_samples=canary.samples or (), stable_samples=stable.samples or ())


def measurement_of(check: str, readings: CheckReadings) -> Measurement:
    """What one check's answers say. The first error wins; a sample count that finds no series at all
    means no traffic (0 samples), never "unknown", or judge would skip the traffic requirement."""
    bound = _bound_measurement(check, readings)
    comparison = comparison_of(readings)
    return bound if comparison is None else replace(bound, comparison=comparison)


def _bound_measurement(check: str, readings: CheckReadings) -> Measurement:
    canary, stable, samples = (readings.get(role) for role in ROLES)
    canary_value = canary.value if canary else None
    stable_value = stable.value if stable else None
    if canary is not None and not canary.ok:
        return Measurement(check, error=f"canary query: {canary.error}")
    if stable is not None and not stable.ok:
        return Measurement(check, canary=canary_value, error=f"stable query: {stable.error}")
    if samples is None:
        return Measurement(check, canary=canary_value, stable=stable_value)
    if not samples.ok:
        return Measurement(check, canary=canary_value, stable=stable_value, error=f"sample query: {samples.error}")
    counted = samples.value if samples.value is not None else 0.0
    return Measurement(check, canary=canary_value, stable=stable_value, samples=counted)


@dataclass(frozen=True)
class AnalysisRun:
    """One run as observed: the request the core made and the raw readings, by check name."""

    request: MeasurementRequest
    readings: Mapping[str, CheckReadings]

    def measurements(self) -> list[Measurement]:
        """Every check of the run, in the request's order; a check with no answers is an error."""
        return [
            measurement_of(item.check, self.readings[item.check]) if item.check in self.readings
            else Measurement(item.check, error="no answer was read for this check")
            for item in self.request.checks
        ]
