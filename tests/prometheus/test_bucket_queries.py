"""A histogram's bucket counts from an instant query: what an answer means, and a real Prometheus."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modelrelease.adapters.prometheus_answers import classify_response
from modelrelease.adapters.prometheus_buckets import MAX_BUCKETS, classify_buckets_data
from tests.prometheus import history_data
from tests.prometheus.conftest import History


def _bucket(le: str, value: Any) -> dict[str, Any]:
    return {"metric": {"le": le}, "value": [1_700_000_000, value]}


def test_buckets_come_back_ascending_with_inf_last_and_nan_as_no_observation():
    result = classify_buckets_data("vector", [_bucket("+Inf", "9"), _bucket("0.1", "NaN"), _bucket("0.05", "4")])
    assert result.ok and result.buckets == ((0.05, 4.0), (0.1, 0.0), (math.inf, 9.0))
    assert classify_buckets_data("vector", []).buckets == ()


@pytest.mark.parametrize(("result_type", "result", "fragment"), [
    ("scalar", [1, "2"], "not a vector of buckets"),
    ("vector", [{"metric": {"pod": "a"}, "value": [1, "2"]}], "has no numeric le label"),
    ("vector", [_bucket("0.1", "1"), _bucket("0.1", "2")], "comes in several series"),
    ("vector", [_bucket("0.1", "many")], "unreadable sample"),
    ("vector", [_bucket(str(i), "1") for i in range(MAX_BUCKETS + 1)], "aggregate them by le only"),
    ("vector", "nope", "not a list of series"),
])
def test_answers_that_are_not_buckets_are_errors_that_say_why(result_type, result, fragment):
    answer = classify_buckets_data(result_type, result)
    assert not answer.ok and answer.error_kind == "shape" and fragment in (answer.error or "")


def test_an_http_error_is_classified_as_for_any_query():
    answer = classify_response(503, {"status": "error", "error": "busy"}, classify=classify_buckets_data)
    assert answer.error_kind == "server"


def test_a_real_prometheus_answers_the_latency_presets_buckets(history: History) -> None:
    query = ('sum by (le) (increase(modelserver_request_duration_seconds_bucket'
             '{model="steady",version="v1",track="stable"}[60s]))')
    answer = history.provider.query_buckets(query, time=history_data.EVALUATED_AT)
    assert answer.ok and answer.buckets
    bounds = [bound for bound, _ in answer.buckets]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf
    counts = [count for _, count in answer.buckets]
    assert counts == sorted(counts) and counts[-1] > 0  # cumulative
