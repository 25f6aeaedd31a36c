"""Analysis against a live Prometheus scraping fake model servers every second."""

from __future__ import annotations

import dataclasses

import pytest

from modelrelease.core.analysis import run_verdict
from tests.prometheus.analysis_helpers import analysis_spec, by_name, poll, preset_checks, run_once
from tests.prometheus.conftest import Live


def test_a_healthy_canary_passes_every_preset_and_a_custom_query(live: Live) -> None:
    spec = analysis_spec(live.prometheus.url, "5s")
    variables = live.variables("live-healthy")

    measurements, records = poll(
        lambda: run_once(live.provider, spec, variables),
        lambda run: run_verdict(run[1]) == "Pass",
        "every check of a healthy canary passing",
    )

    assert {r.name for r in records} == {c["name"] for c in preset_checks()} | {"success-rate"}
    assert all(r.verdict == "Pass" for r in records), records
    readings = {m.check: m for m in measurements}
    assert readings["error-rate"].canary == 0
    # Same latency, same bucket, same interpolated p99 (up to float rounding of the bucket rates).
    assert readings["latency-p99"].canary == pytest.approx(readings["latency-p99"].stable)
    assert readings["success-rate"].canary is not None and readings["success-rate"].canary > 5
    assert all(m.samples is None or m.samples >= spec.min_sample_count for m in measurements)


def test_a_rising_error_rate_fails_the_canary(live: Live) -> None:
    spec = analysis_spec(live.prometheus.url, "5s", checks=[{"name": "errors", "preset": "error-rate"}])
    variables = live.variables("live-errors")
    first_check = lambda: by_name(run_once(live.provider, spec, variables)[1])["errors"]  # noqa: E731

    poll(first_check, lambda record: record.verdict == "Pass", "the canary passing before errors start")
    _, canary = live.workloads["live-errors"]
    canary.behaviour = dataclasses.replace(canary.behaviour, error_share=0.5)

    failed = poll(first_check, lambda record: record.verdict == "Fail", "a Fail verdict once errors rise")

    assert failed.value is not None and failed.value > 0.05
    assert failed.reason.endswith("> 0.05")


def test_a_canary_slower_than_stable_breaks_the_relative_latency_bound(live: Live) -> None:
    spec = analysis_spec(live.prometheus.url, "5s", checks=[{"name": "p99", "preset": "latency-p99"}])
    variables = live.variables("live-slow")

    record = poll(
        lambda: by_name(run_once(live.provider, spec, variables)[1])["p99"],
        lambda record: record.verdict not in ("Inconclusive",),
        "a verdict on the slow canary",
    )

    assert record.verdict == "Fail", record
    assert record.value is not None and record.stable_value is not None
    assert record.value > 1.2 * record.stable_value
    assert "canary/stable" in record.reason and record.reason.endswith("> 1.2")


def test_too_little_traffic_is_inconclusive_while_waiting_for_traffic(live: Live) -> None:
    spec = analysis_spec(live.prometheus.url, "5s", checks=preset_checks(), minSampleCount=20)
    variables = live.variables("live-quiet")
    judged: list[list] = []

    def counted_runs() -> int:
        measurements, records = run_once(live.provider, spec, variables)
        # Only runs that saw some traffic count: they prove the sample query reads real series.
        if all(m.samples for m in measurements):
            judged.append(records)
        return len(judged)

    poll(counted_runs, lambda runs: runs >= 3, "three runs that saw the canary's trickle of traffic")

    for records in judged:
        for record in records:
            assert record.verdict == "Inconclusive", record
            assert record.reason.startswith("waiting for traffic: "), record
            assert record.reason.endswith("need 20")
