"""Every broken answer from Prometheus is an Error or Inconclusive, with a reason naming the cause:
never a pass, never an exception. The operator's real provider talks to a misbehaving server over HTTP;
each fault is checked where the provider classifies it and again where the core judges it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from modelrelease.adapters.prometheus import MAX_ANSWER_BYTES, PrometheusConnection, PrometheusProvider
from modelrelease.api.spec import AnalysisCheck, AnalysisSpec
from modelrelease.core.analysis import Measurement, judge
from modelrelease.core.measurement import AnalysisRun, ReleaseVariables, build_request, request_measurements
from modelrelease.core.measurement import Reading as CoreReading
from modelrelease.core.model import Observations
from modelrelease.runtime.measure import read_run
from modelrelease_local.ports import free_port
from tests.core.world import World, base_spec
from tests.prometheus.faulty import (
    Answer,
    FaultyPrometheus,
    json_answer,
    prometheus_error,
    success,
    vector,
)

TIMEOUT = 0.5
CANARY = 'error_rate{track="canary"}'
SAMPLES = 'requests{track="canary"}'
ERRORS_CHECK: dict[str, Any] = {
    "name": "errors", "query": 'error_rate{track="{{ track }}"}', "max": 0.05,
    "sampleQuery": 'requests{track="{{ track }}"}',
}
VARIABLES = ReleaseVariables("rel", "default", "digits", "v2", None, timedelta(seconds=30))
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
PASSING = vector("0.01")


@pytest.fixture
def faulty() -> Iterator[FaultyPrometheus]:
    with FaultyPrometheus() as server:
        server.route("requests", vector("100"))
        yield server


def provider(url: str) -> PrometheusProvider:
    return PrometheusProvider(PrometheusConnection(url, timeout_seconds=TIMEOUT))


def judged(url: str, check: dict[str, Any] = ERRORS_CHECK) -> tuple[Measurement, Any]:
    """One run of one check as the operator makes it: the core's request, the runtime's reads, the verdict."""
    spec = AnalysisSpec.model_validate({"prometheus": {"url": url}, "minSampleCount": 5, "checks": [check]})
    request = build_request(spec.checks, VARIABLES)
    with provider(url) as prometheus:
        [measurement] = read_run(prometheus, request).measurements()
    return measurement, judge(spec.checks[0], measurement, spec.min_sample_count, request.stable_serving)


# (id, the canary's answer, error kind or None for no data, what the reason must say, the verdict)
FAULTS: list[tuple[str, Answer, str | None, str, str]] = [
    ("slow", Answer(delay=3, body=PASSING.body), "timeout", f"did not answer within {TIMEOUT:g}s", "Error"),
    # A valid, passing answer whose bytes take ~10 s: only a deadline on the whole body stops it.
    ("trickled body", Answer(trickle=0.05, body=PASSING.body), "timeout", f"within {TIMEOUT:g}s", "Error"),
    ("500 with Prometheus' error", prometheus_error(500, "internal", "storage is corrupt"), "server",
     "Prometheus answered 500: storage is corrupt", "Error"),
    ("502 HTML from a proxy", Answer(502, HTML_502, "text/html"), "server",
     "Prometheus answered 502: an HTML page titled '502 Bad Gateway'", "Error"),
    ("503 without a body", Answer(503), "server", "Prometheus answered 503: no details", "Error"),
    ("503 with Retry-After", prometheus_error(503, "unavailable", "starting up", headers=(("Retry-After", "30"),)),
     "server", "Prometheus answered 503, asking to retry after 30: starting up", "Error"),
    ("timeout inside Prometheus", prometheus_error(503, "timeout", "query timed out in expression evaluation"),
     "timeout", "the query timed out in Prometheus", "Error"),
    ("400 bad_data", prometheus_error(400, "bad_data", 'invalid parameter "query": 1:8: parse error: unclosed'),
     "rejected", "parse error: unclosed; the check's query is wrong: fix it in spec.analysis.checks", "Error"),
    ("422 execution", prometheus_error(422, "execution", "many-to-many matching not allowed"),
     "rejected", "many-to-many matching not allowed; the check's query is wrong", "Error"),
    ("truncated JSON", Answer(body=PASSING.body[:25]), "server", "not JSON", "Error"),
    ("HTML with 200", Answer(200, b"<!doctype html><html><title>Sign in</title></html>", "text/html"), "server",
     "an HTML page titled 'Sign in'", "Error"),
    ("JSON nested beyond the parser", Answer(body=b"[" * 200_000), "server", "not JSON", "Error"),
    ("status error with 200", prometheus_error(200, "internal", "odd"), "server", "not a successful", "Error"),
    ("data missing", json_answer({"status": "success"}), "shape", "no data object", "Error"),
    ("data not an object", json_answer({"status": "success", "data": [1]}), "shape", "no data object", "Error"),
    ("result not a list", success("vector", {"value": [0, "1"]}), "shape", "not a list of series", "Error"),
    ("series not an object", success("vector", ["0.01"]), "shape", "not an object", "Error"),
    ("series without a value", success("vector", [{"metric": {}}]), "shape", "has no value", "Error"),
    ("matrix", success("matrix", [{"metric": {}, "values": [[0, "1"]]}]), "shape", "range vector", "Error"),
    ("string", success("string", [0, "0.01"]), "shape", "a string result, not a number", "Error"),
    ("resultType missing", json_answer({"status": "success", "data": {"result": []}}), "shape",
     "a missing result", "Error"),
    ("value not a number", vector("fast"), "shape", "unreadable sample", "Error"),
    ("value a boolean", success("vector", [{"metric": {}, "value": [0, True]}]), "shape", "unreadable", "Error"),
    ("value an object", success("vector", [{"metric": {}, "value": [0, {"v": 1}]}]), "shape", "unreadable", "Error"),
    ("sample too short", success("scalar", ["0.01"]), "shape", "unreadable sample", "Error"),
    ("sample a string", success("scalar", "0.01"), "shape", "unreadable sample", "Error"),
    ("two series", vector("0.01", "0.02"), "shape", '2 series where one is expected: {pod="model-0"}', "Error"),
    ("NaN", vector("NaN"), None, "NaN", "Inconclusive"),
    ("+Inf", vector("+Inf"), None, "+Inf", "Inconclusive"),
    ("-Inf", vector("-Inf"), None, "-Inf", "Inconclusive"),
    ("scalar NaN", success("scalar", [0, "NaN"]), None, "NaN", "Inconclusive"),
    ("empty vector", vector(), None, "empty result", "Inconclusive"),
    ("reset mid-body", Answer(body=PASSING.body[:30], declared_length=400, reset=True), "unreachable",
     "broke off its answer (connection reset)", "Error"),
    ("closed before the declared length", Answer(body=PASSING.body[:30], declared_length=400), "unreachable",
     "connection closed before the whole answer arrived", "Error"),
    ("closed without an answer", Answer(hang_up=True), "unreachable", "connection closed without an answer",
     "Error"),
    ("declared larger than the bound", Answer(body=PASSING.body, declared_length=MAX_ANSWER_BYTES + 1), "shape",
     "larger than 10 MiB", "Error"),
    ("streamed past the bound", Answer(body=b'{"status":"success","data":', filler=MAX_ANSWER_BYTES + 65536),
     "shape", "larger than 10 MiB and was not read; ", "Error"),
]


@pytest.mark.parametrize(("answer", "kind", "says"), [f[1:4] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_the_provider_classifies_each_fault(faulty: FaultyPrometheus, answer: Answer, kind: str | None,
                                            says: str) -> None:
    faulty.route("error_rate", answer)
    with provider(faulty.url) as prometheus:
        result = prometheus.query(CANARY)
    assert result.value is None  # never a number out of a broken answer
    assert result.error_kind == kind
    if kind is None:
        assert (result.error, result.note) == (None, says)
    else:
        assert result.error is not None and says in result.error and len(result.error) <= 300


@pytest.mark.parametrize(("answer", "verdict"), [(f[1], f[4]) for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_the_core_never_passes_a_broken_answer(faulty: FaultyPrometheus, answer: Answer, verdict: str) -> None:
    faulty.route("error_rate", answer)
    measurement, record = judged(faulty.url)
    assert record.verdict == verdict
    if verdict == "Error":
        assert measurement.error is not None and measurement.error.startswith("canary query: ")
        assert record.reason == measurement.error
    else:
        assert record.reason == "no data for the canary"


def test_a_broken_sample_query_is_an_error_too(faulty: FaultyPrometheus) -> None:
    faulty.route("error_rate", PASSING)
    faulty.route("requests", Answer(502, HTML_502, "text/html"))
    measurement, record = judged(faulty.url)
    assert (measurement.canary, record.verdict) == (0.01, "Error")
    assert record.reason.startswith("sample query: Prometheus answered 502")


def test_a_nan_sample_count_is_waiting_for_traffic_not_a_pass(faulty: FaultyPrometheus) -> None:
    faulty.route("error_rate", PASSING)
    faulty.route("requests", vector("NaN"))
    _, record = judged(faulty.url)
    assert (record.verdict, record.reason) == ("Inconclusive", "waiting for traffic: 0 samples, need 5")


def test_the_healthy_answer_passes(faulty: FaultyPrometheus) -> None:
    """The baseline the faults are measured against: the same check passes on a well-formed answer."""
    faulty.route("error_rate", PASSING)
    assert judged(faulty.url)[1].verdict == "Pass"


def test_one_timeout_stops_the_run_and_later_checks_are_not_asked(faulty: FaultyPrometheus) -> None:
    faulty.route("error_rate", Answer(delay=3, body=PASSING.body))
    checks = [ERRORS_CHECK, {**ERRORS_CHECK, "name": "again"}]
    spec = AnalysisSpec.model_validate({"prometheus": {"url": faulty.url}, "checks": checks})
    with provider(faulty.url) as prometheus:
        measurements = read_run(prometheus, build_request(spec.checks, VARIABLES)).measurements()
    assert [m.error for m in measurements] == [f"canary query: Prometheus at {faulty.url} did not answer "
                                               f"within {TIMEOUT:g}s"] * 2
    assert faulty.queries == [CANARY]  # the second check waited for no second timeout


def test_connection_refused_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    measurement, record = judged(url)
    assert record.verdict == "Error"
    assert measurement.error == f"canary query: Prometheus at {url} is unreachable (connection refused)"


def test_a_provider_that_raises_becomes_an_error_not_a_crash() -> None:
    class Broken:
        def query(self, promql: str) -> Any:
            raise KeyError("metric")

    spec = AnalysisSpec.model_validate({"prometheus": {"url": "http://p"}, "checks": [ERRORS_CHECK]})
    [measurement] = read_run(Broken(), build_request(spec.checks, VARIABLES)).measurements()
    assert measurement.error == "canary query: the answer could not be read (KeyError: 'metric')"


def test_the_connection_is_reused_after_a_fault(faulty: FaultyPrometheus) -> None:
    """A fault on one answer leaves the provider usable: the next query reads normally."""
    faulty.route("error_rate", Answer(body=PASSING.body[:30], declared_length=400, reset=True), PASSING)
    with provider(faulty.url) as prometheus:
        assert prometheus.query(CANARY).error_kind == "unreachable"
        assert prometheus.query(CANARY).value == 0.01


# The core on its own: values that no adapter would hand it, from any provider.
NAN, INF = math.nan, math.inf


def _check(**bounds: float) -> AnalysisCheck:
    # Unvalidated on purpose: the core must hold even for a bound the API should have refused.
    return AnalysisCheck.model_construct(name="c", query="q", **bounds)


@pytest.mark.parametrize(("bounds", "measured", "verdict"), [
    ({"max": 0.05}, Measurement("c", canary=NAN, samples=100), "Inconclusive"),
    ({"max": 0.05}, Measurement("c", canary=INF, samples=100), "Inconclusive"),
    ({"min": 0.9}, Measurement("c", canary=-INF), "Inconclusive"),
    ({"max": 0.05}, Measurement("c", canary=0.01, samples=NAN), "Inconclusive"),
    ({"max": 0.05}, Measurement("c", canary=0.01, samples=INF), "Inconclusive"),
    ({"max_ratio": 1.5}, Measurement("c", canary=0.01, stable=NAN), "Inconclusive"),
    ({"max_ratio": 1.5}, Measurement("c", canary=0.01, stable=INF), "Inconclusive"),
    ({"max_ratio": 1.5}, Measurement("c", canary=1e300, stable=1e-300), "Fail"),  # the ratio overflows to inf
    # A bound that is not a number is never "held": the comparison is written so that NaN breaks it.
    ({"max": NAN}, Measurement("c", canary=0.01), "Fail"),
    ({"min": NAN}, Measurement("c", canary=0.01), "Fail"),
    ({"max_ratio": NAN}, Measurement("c", canary=0.01, stable=0.01), "Fail"),
])
def test_the_core_never_passes_nan_or_inf(bounds: dict[str, float], measured: Measurement, verdict: str) -> None:
    assert judge(_check(**bounds), measured, min_sample_count=5).verdict == verdict


def test_a_nan_reading_from_any_provider_is_no_data() -> None:
    spec = AnalysisSpec.model_validate({"prometheus": {"url": "http://p"}, "checks": [ERRORS_CHECK]})
    request = build_request(spec.checks, VARIABLES)
    run = AnalysisRun(request, {"errors": {"canary": CoreReading.of(NAN), "samples": CoreReading.of(100)}})
    [measurement] = run.measurements()
    assert judge(spec.checks[0], measurement, 5).verdict == "Inconclusive"


class WorldOverHttp(World):
    """The planner's in-memory world, but each analysis run is read from Prometheus over HTTP."""

    url: str = ""

    def observations(self, measure: bool) -> Observations:
        seen = super().observations(measure=False)
        request = request_measurements(self.spec, self.status, self.now, release="digits", namespace="default")
        if not measure or request is None:
            return seen
        with provider(self.url) as prometheus:
            return replace(seen, analysis=read_run(prometheus, request))


def test_a_series_that_comes_and_goes_never_promotes_on_a_missing_run(faulty: FaultyPrometheus) -> None:
    faulty.route("error_rate", PASSING, vector())  # present, absent, present, ...
    raw = base_spec()
    raw["analysis"] = {**raw["analysis"], "prometheus": {"url": faulty.url}, "checks": [ERRORS_CHECK]}
    world = WorldOverHttp.of(raw)
    world.url = faulty.url
    verdicts: list[str] = []
    for _ in range(400):
        world.finish_jobs()
        before = world.status
        world.step()
        after = world.status
        ran = after.analysis.last_run_at != before.analysis.last_run_at and after.analysis.checks
        if ran:
            verdict = after.analysis.checks[0].verdict
            verdicts.append(verdict)
            if verdict == "Inconclusive":
                assert after.analysis.checks[0].reason == "no data for the canary"
                # No step ends on a run whose series was missing, and the streak grows by one.
                assert (after.stage_index, after.step_index) == (before.stage_index, before.step_index)
                assert after.analysis.inconclusive == before.analysis.inconclusive + 1
            else:
                assert verdict == "Pass" and after.analysis.inconclusive == 0  # a decisive run ends the streak
        world.settle()
        if world.status.phase == "Released":
            break
        world.wait(15)
    assert world.status.phase == "Released"  # the passes carried it through, never a pause
    assert "Inconclusive" in verdicts and "Pass" in verdicts
    assert all(a != b for a, b in itertools.pairwise(verdicts))  # each run read the other state
