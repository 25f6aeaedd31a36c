"""The real operator against a Prometheus that answers nothing but malformed replies: the release pauses
on analysis errors and never promotes; once Prometheus is healthy, actions.retry lets it finish."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.operator.conftest import Harness, release_spec
from tests.prometheus.faulty import Answer, FaultyPrometheus, json_answer, prometheus_error, success, vector

MALFORMED = (
    Answer(body=b'{"status":"success","data":{"resultType":"vec'),  # truncated
    Answer(502, b"<html><title>502 Bad Gateway</title></html>", "text/html"),
    vector("0", "0"),  # two series where one is expected
    success("matrix", [{"metric": {}, "values": [[0, "0"]]}]),
    prometheus_error(400, "bad_data", "parse error: unexpected end of input"),
    vector("fast"),
    prometheus_error(503, "unavailable", "starting", headers=(("Retry-After", "5"),)),
    json_answer({"status": "success"}),
    Answer(body=b"{}", declared_length=200),  # the connection closes before the declared length
)


@pytest.fixture
def faulty() -> Iterator[FaultyPrometheus]:
    with FaultyPrometheus() as server:
        server.route("", *MALFORMED)  # every query, round and round
        yield server


def heal(faulty: FaultyPrometheus) -> None:
    faulty.clear()
    faulty.route("error_rate", vector("0"))
    faulty.route("requests", vector("100"))
    faulty.route("latency_p99", vector("0.05"))


def test_malformed_answers_pause_the_release_and_retry_resumes_it(harness: Harness, faulty: FaultyPrometheus):
    harness.apply("digits", release_spec(faulty.url))
    paused = harness.wait_phase("digits", "Paused")
    assert paused["pauseReason"] == "AnalysisErrors"
    analysis = paused["analysis"]
    assert analysis["successes"] == 0 and analysis["failures"] == 0
    assert analysis["consecutiveErrors"] > 4  # consecutiveErrorLimit's default, then one more
    assert {c["verdict"] for c in analysis["checks"]} == {"Error"}
    assert all(c["reason"].split(": ", 1)[0] in ("canary query", "stable query", "sample query")
               for c in analysis["checks"])
    stable, canary = paused["stable"], paused["canary"]
    # Never promoted: the first stage's model still serves as stable, the canary at its first step.
    assert stable["stage"] == "warmup" and canary["id"] != stable["id"] and len(faulty.queries) > 5

    time.sleep(3)  # several analysis intervals: a paused release asks nothing and moves nowhere
    held = harness.status("digits")
    assert (held["phase"], held["stable"], held["canaryWeight"]) == ("Paused", stable, paused["canaryWeight"])

    heal(faulty)
    harness.patch_spec("digits", {"actions": {"retry": "after-prometheus-fix"}})
    released = harness.wait_phase("digits", "Released")
    assert released["handledActions"]["retry"] == "after-prometheus-fix"
    assert released["stable"]["stage"] == "full"
    assert released.get("pauseReason") is None
