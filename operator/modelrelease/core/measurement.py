"""What one analysis run asks Prometheus, and what its raw answers mean: the pure half of analysis.

The core decides whether a run is due, which checks it has, the rendered PromQL for the canary and
(only when the stable serves) for the stable, and the sample queries: a ``MeasurementRequest``. The
runtime only sends those queries and hands back a ``Reading`` per query, with an explicit no-data
state. Turning readings into ``Measurement`` values (``measurement_of``) is done here again, so every
rule about what an answer means lives in the core, beside ``analysis.judge`` that reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from modelrelease.api.base import parse_duration
from modelrelease.api.spec import AnalysisCheck, ModelReleaseSpec
from modelrelease.api.status import ANALYSING_PHASES, ModelReleaseStatus
from modelrelease.core.analysis import Measurement, bounds_of
from modelrelease.core.timestamps import parse_timestamp
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import format_range, render

Role = Literal["canary", "stable", "samples"]
ROLES: tuple[Role, ...] = ("canary", "stable", "samples")
"""The order a check's queries are sent in; the runtime stops a check at its first error."""


@dataclass(frozen=True)
class Reading:
    """One query's answer: a finite number, no data (empty, NaN, ±Inf), or an error."""

    value: float | None = None
    error: str | None = None
    note: str = ""
    """Why there is no data, for people ("empty result", "NaN")."""

    @classmethod
    def of(cls, value: float) -> Self:
        return cls(value=value)

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


def queries_of(check: AnalysisCheck) -> CheckQueries:
    if check.preset is not None:
        preset = PRESETS[check.preset]
        return CheckQueries(preset.query, check.sample_query or preset.sample_query)
    if check.query is None:
        raise ValueError(f"check {check.name} has neither a preset nor a query")
    return CheckQueries(check.query, check.sample_query)


@dataclass(frozen=True)
class RenderedCheck:
    """The PromQL one check sends in one run, by role (also what users are shown as asked)."""

    canary: str
    stable: str | None
    samples: str | None

    def by_role(self) -> list[tuple[Role, str]]:
        pairs: list[tuple[Role, str | None]] = [
            ("canary", self.canary), ("stable", self.stable), ("samples", self.samples)]
        return [(role, query) for role, query in pairs if query is not None]


def render_check(check: AnalysisCheck, variables: ReleaseVariables) -> RenderedCheck:
    queries = queries_of(check)
    canary_values = variables.values("canary", variables.canary_version)
    stable = None
    if bounds_of(check).relative and variables.stable_version is not None:
        stable = render(queries.query, variables.values("stable", variables.stable_version))
    samples = render(queries.sample_query, canary_values) if queries.sample_query else None
    return RenderedCheck(render(queries.query, canary_values), stable, samples)


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
    )
    return build_request(spec.analysis.checks, variables)


def build_request(checks: Sequence[AnalysisCheck], variables: ReleaseVariables) -> MeasurementRequest:
    """The queries of a run for these variables; the stable serves exactly when it has a version."""
    rendered = tuple(CheckRequest(c.name, render_check(c, variables)) for c in checks)
    return MeasurementRequest(rendered, stable_serving=variables.stable_version is not None)


def measurement_of(check: str, readings: CheckReadings) -> Measurement:
    """What one check's answers say. The first error wins; a sample count that finds no series at all
    means no traffic (0 samples), never "unknown", or judge would skip the traffic requirement."""
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
