"""One run with a scripted provider: which queries the core asks for, which the runtime sends, and
how the answers become measurements."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from modelrelease.adapters.prometheus import QueryResult
from modelrelease.api.spec import AnalysisSpec
from modelrelease.core.analysis import Measurement
from modelrelease.core.measurement import ReleaseVariables
from tests.prometheus.analysis_helpers import analysis_spec, measure_checks

VARIABLES = ReleaseVariables("shop", "prod", "digits", "v2", "v1", timedelta(seconds=30))
CUSTOM = {"name": "custom", "query": 'x{track="{{ track }}",version="{{ version }}"}', "max": 1}


class Scripted:
    """Answers each query with ``answer(query)`` and records the queries in order."""

    def __init__(self, answer: Callable[[str], QueryResult]) -> None:
        self.answer = answer
        self.queries: list[str] = []

    def query(self, promql: str) -> QueryResult:
        self.queries.append(promql)
        return self.answer(promql)


def spec(*checks: dict) -> AnalysisSpec:
    return analysis_spec("http://prometheus", "30s", checks=list(checks))


def test_a_relative_preset_reads_canary_stable_and_samples() -> None:
    provider = Scripted(lambda q: QueryResult.of(3.0 if 'track="canary"' in q else 2.0))

    [reading] = measure_checks(provider, spec({"name": "p99", "preset": "latency-p99"}), VARIABLES)

    assert reading == Measurement("p99", canary=3.0, stable=2.0, samples=3.0)
    canary, stable, samples = provider.queries
    assert 'version="v2",track="canary"' in canary and "[30s]" in canary
    assert 'version="v1",track="stable"' in stable
    assert samples.startswith("sum(increase(modelserver_requests_total{") and 'track="canary"' in samples


def test_an_absolute_check_does_not_query_stable() -> None:
    provider = Scripted(lambda q: QueryResult.of(0.5))
    [reading] = measure_checks(provider, spec(CUSTOM), VARIABLES)
    assert reading == Measurement("custom", canary=0.5)
    assert provider.queries == ['x{track="canary",version="v2"}']


def test_own_bounds_can_make_a_preset_relative_or_absolute() -> None:
    provider = Scripted(lambda q: QueryResult.of(0.01))
    checks = ({"name": "a", "preset": "error-rate", "maxRatio": 2}, {"name": "b", "preset": "confidence", "min": 0.5})
    relative, absolute = measure_checks(provider, spec(*checks), VARIABLES)
    assert relative.stable == 0.01 and absolute.stable is None


def test_without_a_stable_version_a_relative_check_has_no_stable_reading() -> None:
    provider = Scripted(lambda q: QueryResult.of(1.0))
    first_release = ReleaseVariables("shop", "prod", "digits", "v2", None, timedelta(seconds=30))
    [reading] = measure_checks(provider, spec({"name": "c", "preset": "confidence"}), first_release)
    assert reading.stable is None and len(provider.queries) == 2


def test_a_sample_query_without_series_means_no_traffic() -> None:
    provider = Scripted(lambda q: QueryResult.no_data("empty result") if "increase" in q else QueryResult.of(0.0))
    [reading] = measure_checks(provider, spec({"name": "e", "preset": "error-rate"}), VARIABLES)
    assert reading.samples == 0.0


def test_an_own_sample_query_replaces_the_presets() -> None:
    provider = Scripted(lambda q: QueryResult.of(100.0))
    check = {"name": "e", "preset": "error-rate", "sampleQuery": 'my_requests{version="{{ version }}"}'}
    measure_checks(provider, spec(check), VARIABLES)
    assert provider.queries[-1] == 'my_requests{version="v2"}'


def test_errors_name_the_query_that_failed() -> None:
    def answer(q: str) -> QueryResult:
        if "increase" in q:
            return QueryResult.failed("rejected", "Prometheus rejected the query (400): bad")
        if 'track="stable"' in q:
            return QueryResult.failed("shape", "the query returns 2 series where one is expected")
        return QueryResult.of(1.0)

    readings = measure_checks(
        Scripted(answer), spec({"name": "p", "preset": "latency-p99"}, {"name": "e", "preset": "error-rate"}),
        VARIABLES,
    )
    assert [r.error for r in readings] == [
        "stable query: the query returns 2 series where one is expected",
        "sample query: Prometheus rejected the query (400): bad",
    ]


def test_after_a_connection_failure_the_run_stops_asking() -> None:
    down = QueryResult.failed("unreachable", "Prometheus at http://p is unreachable (connection refused)")
    provider = Scripted(lambda q: down)
    checks = [{"name": n, "preset": n} for n in ("error-rate", "latency-p99", "confidence")]

    readings = measure_checks(provider, spec(*checks), VARIABLES)

    assert len(provider.queries) == 1
    assert [r.error for r in readings] == [f"canary query: {down.error}"] * 3
