"""One analysis run's readings: render each check's queries for a release and read them from Prometheus.

Judging is the core's job (``modelrelease.core.analysis.judge``); this module only turns checks into
``Measurement`` values. It is synchronous and bounded: every query carries the provider's timeout, and
once Prometheus proves unreachable the remaining queries of the run are not attempted, so a run costs
at most about one timeout however many checks there are. The operator calls it in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from modelrelease.adapters.prometheus import MetricsProvider, QueryResult
from modelrelease.api.spec import AnalysisCheck, AnalysisSpec
from modelrelease.core.analysis import Measurement, bounds_of
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import format_range, render


@dataclass(frozen=True)
class ReleaseVariables:
    """What a release fills into query templates."""

    release: str
    namespace: str
    model: str
    canary_version: str
    stable_version: str | None
    """None before anything was released, or when stable serves nothing (weight 100): relative checks
    then send no stable query (judge calls them inconclusive, or skips them with stable_serving=False)."""
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
    """The PromQL a check sends in one run (also handy for showing users what was asked)."""

    canary: str
    stable: str | None
    samples: str | None


def render_check(check: AnalysisCheck, variables: ReleaseVariables) -> RenderedCheck:
    queries = queries_of(check)
    canary_values = variables.values("canary", variables.canary_version)
    stable = None
    if bounds_of(check).relative and variables.stable_version is not None:
        stable = render(queries.query, variables.values("stable", variables.stable_version))
    samples = render(queries.sample_query, canary_values) if queries.sample_query else None
    return RenderedCheck(render(queries.query, canary_values), stable, samples)


class _Run:
    """Queries of one run; remembers a connection failure so later queries are not attempted."""

    def __init__(self, provider: MetricsProvider) -> None:
        self.provider = provider
        self.down: QueryResult | None = None

    def ask(self, promql: str) -> QueryResult:
        if self.down is not None:
            return self.down
        result = self.provider.query(promql)
        if result.connection_failed:
            self.down = result
        return result


def measure_check(run: _Run, check: AnalysisCheck, variables: ReleaseVariables) -> Measurement:
    queries = render_check(check, variables)
    canary = run.ask(queries.canary)
    if not canary.ok:
        return Measurement(check.name, error=f"canary query: {canary.error}")
    stable_value = None
    if queries.stable is not None:
        stable = run.ask(queries.stable)
        if not stable.ok:
            return Measurement(check.name, canary=canary.value, error=f"stable query: {stable.error}")
        stable_value = stable.value
    samples_value = None
    if queries.samples is not None:
        samples = run.ask(queries.samples)
        if not samples.ok:
            return Measurement(
                check.name, canary=canary.value, stable=stable_value, error=f"sample query: {samples.error}"
            )
        # A count of requests that finds no series at all means no traffic, not "unknown": reading it
        # as None would let judge skip the traffic requirement altogether.
        samples_value = samples.value if samples.has_data else 0.0
    return Measurement(check.name, canary=canary.value, stable=stable_value, samples=samples_value)


def measure_checks(
    provider: MetricsProvider, analysis: AnalysisSpec, variables: ReleaseVariables
) -> list[Measurement]:
    """Read every check of one analysis run, in the spec's order."""
    run = _Run(provider)
    return [measure_check(run, check, variables) for check in analysis.checks]
