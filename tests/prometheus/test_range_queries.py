"""Range queries: every finite value of every series at every step, or an error in words.

The classification is pure and tested on answers written by hand; the provider is tested against a
real Prometheus serving recorded history (tests/prometheus/history_data.py), where the samples a range
holds are known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelrelease.adapters.prometheus import (
    MAX_RANGE_SERIES,
    PrometheusConnection,
    PrometheusProvider,
    QueryResult,
    classify_range_data,
    classify_response,
)
from modelrelease_local.ports import free_port
from tests.prometheus import history_data
from tests.prometheus.conftest import History
from tests.prometheus.fake_http import FakeServer

T0, STEP = history_data.T0, history_data.STEP


def matrix(*series: list[list[Any]], labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [{"metric": {**(labels or {}), "pod": f"p{i}"}, "values": values} for i, values in enumerate(series)]


def answer(result: Any, result_type: str = "matrix") -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


# Pure classification


def test_every_value_of_every_series_is_a_sample() -> None:
    result = classify_range_data("matrix", matrix([[1, "0.5"], [2, "0.25"]], [[1, "3"]]))
    assert result == QueryResult.of_samples([0.5, 0.25, 3.0])
    assert result.has_data and result.value is None and result.error is None


def test_nan_and_infinities_are_dropped_not_counted() -> None:
    result = classify_range_data("matrix", matrix([[1, "NaN"], [2, "1.5"], [3, "+Inf"]], [[1, "-Inf"], [2, 7]]))
    assert result.samples == (1.5, 7.0)


def test_an_empty_matrix_is_zero_samples_not_an_error() -> None:
    result = classify_range_data("matrix", [])
    assert result == QueryResult(samples=())
    assert result.error is None and not result.has_data


def test_series_with_only_non_finite_values_give_zero_samples() -> None:
    assert classify_range_data("matrix", matrix([[1, "NaN"], [2, "NaN"]])).samples == ()


def test_up_to_the_series_limit_is_read() -> None:
    result = classify_range_data("matrix", matrix(*([[1, "1"]] for _ in range(MAX_RANGE_SERIES))))
    assert result.samples == (1.0,) * MAX_RANGE_SERIES


def test_too_many_series_is_a_shape_error_saying_how_to_aggregate() -> None:
    too_many = matrix(*([[1, "1"]] for _ in range(MAX_RANGE_SERIES + 1)), labels={"__name__": "latency"})
    result = classify_range_data("matrix", too_many)
    assert result.error_kind == "shape" and result.samples is None
    assert result.error is not None
    assert result.error.startswith(f"the range query returns {MAX_RANGE_SERIES + 1} series, more than 1000")
    assert 'latency{pod="p0"}' in result.error
    assert result.error.endswith("aggregate them, e.g. by pod: sum by (pod) (...)")


@pytest.mark.parametrize(
    ("result_type", "result", "expected"),
    [
        ("vector", [], "the range query returns a vector result, not a matrix of series"),
        ("scalar", [1, "2"], "the range query returns a scalar result, not a matrix of series"),
        (None, [], "the range query returns a missing result, not a matrix of series"),
        ("matrix", {"a": 1}, "the matrix's result is a JSON dict, not a list of series"),
        ("matrix", None, "the matrix's result is missing, not a list of series"),
        ("matrix", ["x"], "a series of the matrix is not an object"),
        ("matrix", [{"metric": {"__name__": "up"}}], "up{} has no list of values"),
        ("matrix", [{"metric": {}, "values": [[1, "1"], [2, "many"]]}],
         "unreadable sample [2, 'many']: expected [time, \"number\"]"),
        ("matrix", [{"metric": {}, "values": [[1, True]]}], "unreadable sample [1, True]: expected [time, \"number\"]"),
        ("matrix", [{"metric": {}, "values": [[1, 10**400]]}], "unreadable sample"),
        ("matrix", [{"metric": {"__name__": "h"}, "histograms": [[1, {"count": "3"}]]}],
         "h{} is a native histogram, not numbers; query a quantile of it, e.g. with histogram_quantile()"),
    ],
)
def test_answers_that_hold_no_samples_are_shape_errors(result_type: Any, result: Any, expected: str) -> None:
    outcome = classify_range_data(result_type, result)
    assert outcome.error_kind == "shape" and outcome.samples is None
    assert outcome.error is not None and outcome.error.startswith(expected)


def test_http_errors_are_classified_as_for_instant_queries() -> None:
    def ranged(status: int, body: Any, text: str = "", retry_after: str | None = None) -> QueryResult:
        return classify_response(status, body, text, retry_after, classify=classify_range_data)

    assert ranged(200, answer(matrix([[1, "2"]]))).samples == (2.0,)
    assert ranged(401, None, "no") == QueryResult.failed(
        "auth", "Prometheus refused access (401); check the credentials")
    assert ranged(503, None, "busy", retry_after="5") == QueryResult.failed(
        "server", "Prometheus answered 503, asking to retry after 5: busy")
    assert ranged(503, {"status": "error", "errorType": "timeout", "error": "query timed out"}).error_kind == "timeout"
    rejected = ranged(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
    assert rejected.error == ("Prometheus rejected the query (400): parse error; "
                              "the check's query is wrong: fix it in spec.analysis.checks")
    assert ranged(200, None, "<html><title>Login</title></html>").error_kind == "server"
    assert ranged(200, {"status": "success"}).error_kind == "shape"


# The provider against a server that shows what it was asked


@pytest.fixture
def recording() -> Iterator[FakeServer]:
    server = FakeServer(answer(matrix([[1, "4"], [2, "NaN"]])))
    yield server
    server.close()


def test_the_range_is_asked_of_the_range_endpoint_with_its_times(recording: FakeServer) -> None:
    with PrometheusProvider(PrometheusConnection(recording.url, timeout_seconds=2.5)) as provider:
        result = provider.at(T0 + 999).query_range("latency", T0, T0 + 60, 15)
    assert result.samples == (4.0,)
    path, params = recording.asked[-1]
    assert path == "/api/v1/query_range"
    # The view's fixed time is for instant queries: a range carries its own times.
    assert params == {"query": ["latency"], "start": [f"{T0}.000"], "end": [f"{T0 + 60}.000"],
                      "step": ["15.000"], "timeout": ["2.500"]}


@pytest.mark.parametrize(
    ("start", "end", "step", "message"),
    [
        (T0, T0 + 60, 0, "the range's step is 0s; it must be positive: set compare.step, e.g. 15s"),
        (T0, T0 + 60, -5, "the range's step is -5s; it must be positive"),
        (T0 + 60, T0, 15, f"the range ends at {T0}.000 before it starts at {T0 + 60}.000"),
        (T0, T0 + 86_400, 1, "the range has 86401 steps per series, more than Prometheus' 11000: "
                             "raise compare.step or shorten compare.window"),
    ],
)
def test_a_range_prometheus_would_refuse_is_not_sent(
    recording: FakeServer, start: float, end: float, step: float, message: str
) -> None:
    with PrometheusProvider(PrometheusConnection(recording.url)) as provider:
        result = provider.query_range("latency", start, end, step)
    assert result.error_kind == "rejected" and result.error is not None and result.error.startswith(message)
    assert recording.asked == []


# The provider against a real Prometheus with recorded history


def counter(model: str, track: str, code: str = "200") -> str:
    return f'modelserver_requests_total{{model="{model}",track="{track}",code="{code}"}}'


def test_a_range_over_a_recorded_counter_holds_each_step(history: History) -> None:
    # One scrape every 15 s; the canary served 150 requests per step, so the counter reads 150 * step.
    result = history.provider.query_range(counter("steady", "canary"), T0, T0 + 10 * STEP, STEP)
    assert result.samples == tuple(150.0 * step for step in range(11))


def test_every_series_of_the_range_contributes_samples(history: History) -> None:
    # Two tracks and two response codes: four series over eleven steps; no errors were served (zeros).
    result = history.provider.query_range('modelserver_requests_total{model="steady"}', T0, T0 + 10 * STEP, STEP)
    assert result.samples is not None
    assert sorted(result.samples) == sorted([150.0 * step for step in range(11)] * 2 + [0.0] * 22)


def test_nan_values_of_a_broken_exporter_are_no_samples(history: History) -> None:
    # The "nan" canary's confidence sum reads NaN from T0+300 on: of the steps 240..360, four remain.
    query = 'modelserver_prediction_confidence_sum{model="nan",track="canary"}'
    result = history.provider.query_range(query, T0 + 240, T0 + 360, STEP)
    assert result.samples == pytest.approx([150 * 0.9 * step for step in (16, 17, 18, 19)])


def test_a_range_with_no_series_is_zero_samples(history: History) -> None:
    assert history.provider.query_range("no_such_metric", T0, T0 + 600, STEP) == QueryResult(samples=())


def rate_30s(model: str) -> str:
    return f"rate({counter(model, 'canary')}[30s])"


# Steps 7 s past each scrape: every 30 s window then holds two scrapes, and no window edge falls on one.
RANGE_START, RANGE_END = T0 + 307, T0 + 800
STEPS = (RANGE_END - RANGE_START) // STEP + 1


def test_a_rate_over_a_healthy_range_is_one_sample_per_step(history: History) -> None:
    result = history.provider.query_range(rate_30s("steady"), RANGE_START, RANGE_END, STEP)
    assert result.samples == pytest.approx([10.0] * STEPS)


def test_a_gap_in_scraping_gives_fewer_samples(history: History) -> None:
    # The "gappy" canary was not scraped between T0+450 and T0+660 (exclusive): the 14 steps whose window
    # reaches into the gap hold fewer than two scrapes, so rate() has no value there.
    result = history.provider.query_range(rate_30s("gappy"), RANGE_START, RANGE_END, STEP)
    assert result.error is None
    assert result.samples == pytest.approx([10.0] * (STEPS - 14))


def test_a_bad_range_query_is_rejected_with_prometheus_reason(history: History) -> None:
    result = history.provider.query_range("sum(rate(x[5m])", T0, T0 + 60, STEP)
    assert result.error_kind == "rejected" and result.error is not None
    assert result.error.startswith("Prometheus rejected the query (400)") and "parse error" in result.error


def test_a_range_of_an_unreachable_server_is_a_connection_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusProvider(PrometheusConnection(url, timeout_seconds=2)) as provider:
        result = provider.query_range("up", T0, T0 + 60, STEP)
    assert result == QueryResult.failed("unreachable", f"Prometheus at {url} is unreachable (connection refused)")
    assert result.connection_failed
