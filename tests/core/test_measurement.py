"""The core's half of an analysis run: what it asks for, and what raw readings mean."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrelease.api.status import AnalysisRecord, ModelReleaseStatus, ModelVersion
from modelrelease.core.analysis import Measurement
from modelrelease.core.measurement import AnalysisRun, Reading, measurement_of, request_measurements
from tests.core.world import T0, World

STABLE = ModelVersion(id="sha256:" + "a" * 64, name="warmup-aaaaaaaaaaaa", path="/m/a", stage="warmup")
CANARY = ModelVersion(id="sha256:" + "b" * 64, name="grow-bbbbbbbbbbbb", path="/m/b", stage="grow")


def status(weight: int, phase: str = "Progressing", last_run: str | None = None) -> ModelReleaseStatus:
    return ModelReleaseStatus(
        phase=phase, stable=STABLE, canary=CANARY, canary_weight=weight,  # type: ignore[arg-type]
        analysis=AnalysisRecord(version=CANARY.id, started_at="2026-11-01T11:59:00Z", last_run_at=last_run))


def request_at(weight: int, **kw: object):
    spec = World.of().spec  # checks: errors (error-rate, absolute), latency (latency-p99, relative)
    return request_measurements(spec, status(weight, **kw), T0, release="digits", namespace="shop")  # type: ignore[arg-type]


def test_below_weight_100_relative_checks_query_the_stable_too() -> None:
    request = request_at(50)
    assert request is not None and request.stable_serving
    errors, latency = request.checks
    assert errors.queries.stable is None  # an absolute bound needs no stable reading
    assert latency.queries.stable is not None and STABLE.id in latency.queries.stable
    assert CANARY.id in latency.queries.canary and 'track="canary"' in latency.queries.canary


def test_at_weight_100_the_stable_serves_nothing_and_is_not_queried() -> None:
    request = request_at(100)
    assert request is not None and not request.stable_serving
    assert all(item.queries.stable is None for item in request.checks)


@pytest.mark.parametrize(
    ("phase", "last_run"),
    [("Paused", None), ("Promoting", None), ("RollingBack", None), ("Progressing", "2026-11-01T11:59:50Z")],
)
def test_no_run_is_asked_for_outside_analysis_or_before_the_interval(phase: str, last_run: str | None) -> None:
    assert request_at(50, phase=phase, last_run=last_run) is None


def test_a_due_run_follows_the_interval() -> None:
    spec = World.of().spec
    early = status(50, last_run="2026-11-01T11:59:45Z")
    assert request_measurements(spec, early, T0, release="r", namespace="n") is None
    assert request_measurements(spec, early, T0 + timedelta(seconds=15), release="r", namespace="n") is not None


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ({"canary": Reading.of(0.1), "stable": Reading.of(0.2), "samples": Reading.of(50)},
         Measurement("c", canary=0.1, stable=0.2, samples=50)),
        ({"canary": Reading.no_data("NaN")}, Measurement("c")),
        # A request count that finds no series is no traffic, never "unknown".
        ({"canary": Reading.of(0.1), "samples": Reading.no_data("empty result")},
         Measurement("c", canary=0.1, samples=0.0)),
        ({"canary": Reading.failure("timeout")}, Measurement("c", error="canary query: timeout")),
        ({"canary": Reading.of(1.0), "stable": Reading.failure("5xx")},
         Measurement("c", canary=1.0, error="stable query: 5xx")),
        ({"canary": Reading.of(1.0), "samples": Reading.failure("400")},
         Measurement("c", canary=1.0, error="sample query: 400")),
    ],
)
def test_readings_become_measurements(readings: dict, expected: Measurement) -> None:
    assert measurement_of("c", readings) == expected


def test_a_check_without_any_answer_is_an_error_not_a_pass() -> None:
    request = request_at(50)
    assert request is not None
    measurements = AnalysisRun(request, {"errors": {"canary": Reading.of(0.0)}}).measurements()
    assert [m.check for m in measurements] == ["errors", "latency"]
    assert measurements[1].error == "no answer was read for this check"
