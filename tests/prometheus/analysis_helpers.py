"""Shared pieces of the Prometheus tests: analysis specs, one analysis run, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from modelrelease.adapters.prometheus import MetricsProvider
from modelrelease.api.spec import AnalysisSpec
from modelrelease.api.status import CheckRecord
from modelrelease.core.analysis import Measurement, judge
from modelrelease.core.measurement import ReleaseVariables, build_request
from modelrelease.promql.presets import PRESETS
from modelrelease.runtime.measure import read_run

T = TypeVar("T")

SELECTOR = 'model="{{ model }}",version="{{ version }}",track="{{ track }}"'
CUSTOM_CHECK: dict[str, Any] = {
    "name": "success-rate",
    "query": f'sum(rate(modelserver_requests_total{{{SELECTOR},code="200"}}[{{{{ interval }}}}]))',
    "min": 5,
}
"""Successful predictions per second; no sample query, so it is judged on the value alone."""


def preset_checks() -> list[dict[str, Any]]:
    """Every preset for the reference server's metrics (the tfserving-* ones read TensorFlow Serving's names)."""
    return [{"name": name, "preset": name} for name in PRESETS if not name.startswith("tfserving-")]


def analysis_spec(
    url: str, interval: str, checks: list[dict[str, Any]] | None = None, **fields: Any
) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "prometheus": {"url": url, "timeout": "5s"},
            "interval": interval,
            "checks": checks if checks is not None else [*preset_checks(), CUSTOM_CHECK],
            **fields,
        }
    )


def measure_checks(provider: MetricsProvider, spec: AnalysisSpec, variables: ReleaseVariables) -> list[Measurement]:
    """The core's request for these variables, sent by the runtime, read back by the core."""
    return read_run(provider, build_request(spec.checks, variables)).measurements()


def run_once(
    provider: MetricsProvider, spec: AnalysisSpec, variables: ReleaseVariables
) -> tuple[list[Measurement], list[CheckRecord]]:
    """One analysis run as the operator does it: measure every check, then judge it."""
    request = build_request(spec.checks, variables)
    measurements = read_run(provider, request).measurements()
    by_name = {check.name: check for check in spec.checks}
    return measurements, [
        judge(by_name[m.check], m, spec.min_sample_count, request.stable_serving) for m in measurements]


def by_name(records: list[CheckRecord]) -> dict[str, CheckRecord]:
    return {record.name: record for record in records}


def poll(read: Callable[[], T], done: Callable[[T], bool], what: str, limit: float = 60.0) -> T:
    """Read until ``done`` holds; fail (naming the last reading) if it never does within ``limit``.

    The limit only bounds a broken run: nothing here asserts how long a condition took.
    """
    deadline = time.monotonic() + limit
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {limit:g}s; last reading: {value!r}")
        time.sleep(0.5)
