"""Faults from the API server, injected by the embedded API's fault plan, survived by the real operator.

Each test runs a whole release through one kind of fault and holds it to what an uninterrupted run
does: Released, one Job per stage, the same history, and every Event reason exactly as often (none
lost, none twice); and it checks that the fault was hit and shows in the request log.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from modelrelease.api import parse_spec
from modelrelease.core.naming import job_name, spec_hash
from modelrelease_local.recording import RequestRecord
from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for

RELEASE = "digits"
# What the uninterrupted run of `release_spec` posts (test_a_fault_free_run_posts_these_events holds it).
FAULT_FREE_EVENTS = {"TrainingStarted": 3, "GatesPassed": 3, "FirstRelease": 1, "CanaryStarted": 2,
                     "StepAdvanced": 2, "Promoting": 1, "Released": 1}


def _event_counts(harness: Harness) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for event in harness.events():
        counts[event.reason] += event.count or 1
    return counts


def _run_release(harness: Harness) -> dict[str, Any]:
    harness.apply(RELEASE, release_spec(harness.prometheus.url))
    return harness.wait_phase(RELEASE, "Released")


def _assert_like_an_uninterrupted_run(harness: Harness, status: dict[str, Any]) -> None:
    spec = parse_spec(harness.get(RELEASE)["spec"])
    assert harness.jobs() == sorted(job_name(RELEASE, s.name, 1, 1, spec_hash(spec)) for s in spec.stages)
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * len(spec.stages)
    assert [v["stage"] for v in status["history"]] == ["warmup", "full"]
    assert status["stable"]["stage"] == "full" and status.get("canary") is None
    # Events are posted after the status patch that records them: wait for the last to land.
    wait_for(lambda: _event_counts(harness) == FAULT_FREE_EVENTS,
             f"the events of an uninterrupted run: {FAULT_FREE_EVENTS}, not {dict(_event_counts(harness))}",
             timeout=30)


def _injected(harness: Harness, **match: Any) -> list[RequestRecord]:
    return [r for r in harness.server.requests.filter(**match) if r.injected]


def test_a_fault_free_run_posts_these_events(harness: Harness):
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert not _injected(harness)


def test_500s_are_retried_and_nothing_is_done_twice(harness: Harness):
    entries = harness.server.faults.load({"faults": [
        {"kind": "error", "status": 500, "method": "POST", "resource": "jobs", "times": 1},
        {"kind": "error", "status": 500, "method": "PATCH", "pathSuffix": "/status", "times": 2},
        {"kind": "error", "status": 500, "method": "PATCH", "resource": "deployments", "times": 1},
        # kopf's own requests: the finalizer patch, and an Event (kopf posts it again, once).
        {"kind": "error", "status": 500, "method": "PATCH", "pathRegex": "/modelreleases/digits$", "times": 1},
        {"kind": "error", "status": 500, "method": "POST", "resource": "events", "times": 1},
    ]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert [entry.hits for entry in entries] == [1, 2, 1, 1, 1]
    injected = _injected(harness)
    assert len(injected) == 6 and {r.status for r in injected} == {500}
    assert {r.method for r in injected} == {"POST", "PATCH"}


def _next_after(harness: Harness, fault: RequestRecord, **match: Any) -> RequestRecord:
    later = [r for r in harness.server.requests.filter(**match) if r.timestamp > fault.timestamp]
    assert later, f"no request after the injected {fault.method} {fault.path}"
    return later[0]


def test_429_with_retry_after_is_waited_out_by_the_operator_and_by_kopf(harness: Harness):
    status_patch, event = harness.server.faults.load({"faults": [
        {"kind": "error", "status": 429, "retryAfter": 2, "method": "PATCH", "pathSuffix": "/status", "times": 1},
        {"kind": "error", "status": 429, "retryAfter": 1, "method": "POST", "resource": "events", "times": 1},
    ]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert status_patch.hits == 1 and event.hits == 1
    throttled = _injected(harness, method="PATCH", path_suffix="/status")
    assert [r.status for r in throttled] == [429]
    # Causality on recorded times: the retry was sent no sooner than the server asked.
    retry = _next_after(harness, throttled[0], method="PATCH", path_suffix="/status")
    assert retry.timestamp - throttled[0].timestamp >= 2.0 and retry.status == 200
    refused_event = _injected(harness, method="POST", path_contains="/events")[0]
    assert _next_after(harness, refused_event, method="POST", path_contains="/events").timestamp \
        - refused_event.timestamp >= 1.0
    assert "throttled by the API server" in harness.operator_log()


def test_a_restart_window_of_503s_that_ends_every_watch(harness: Harness):
    harness.apply(RELEASE, release_spec(harness.prometheus.url))
    harness.wait_phase(RELEASE, "Progressing")
    restart = harness.server.faults.restart(3.0)
    wait_for(lambda: not restart.active(time.monotonic()), "the API server back")  # the test's reads get 503s too
    status = harness.wait_phase(RELEASE, "Released")
    _assert_like_an_uninterrupted_run(harness, status)
    refused = _injected(harness)
    assert refused and {r.status for r in refused} == {503}
    assert restart.hits > len(refused)  # the refused requests, and the watch-streams it ended
    began = refused[0].timestamp
    rewatched = {r.path.rsplit("/", 1)[-1] for r in harness.server.requests if r.is_watch and r.status == 200
                 and not r.injected and r.timestamp > began}
    assert {"modelreleases", "jobs", "pods", "deployments", "services"} <= rewatched


def test_slow_answers(harness: Harness):
    slow_requests, slow_watches = harness.server.faults.load({"seed": 11, "faults": [
        {"kind": "slow", "delay": 1.0, "watch": False, "probability": 0.3, "times": 12},
        {"kind": "slow", "delay": 1.0, "watch": True, "times": 3},
    ]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert slow_requests.hits == 12 and slow_watches.hits == 3
    slowed = _injected(harness)
    # Late, but answered by the store, not failed: a slowed request may still get what the store says (a 409
    # when the release changed meanwhile, a 404 for a child not created yet), never an error of the fault.
    assert len(slowed) == 15 and all(r.status < 500 for r in slowed), [r.status for r in slowed]


def test_dropped_watch_streams(harness: Harness):
    (dropping,) = harness.server.faults.load({"faults": [{"kind": "dropWatches", "every": 1.0, "times": None}]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert dropping.rounds > 3 and dropping.hits > 3 * 4
    watches = collections.Counter(r.path.rsplit("/", 1)[-1] for r in harness.server.requests if r.is_watch)
    assert watches["modelreleases"] > 3 and watches["jobs"] > 3  # kopf watched again each time


def test_410_gone_inside_watch_streams(harness: Harness):
    expiring, gone_at_start = harness.server.faults.load({"faults": [
        {"kind": "expireWatches", "every": 1.5, "times": None},
        {"kind": "error", "status": 410, "watch": True, "resource": "jobs", "times": 2},
    ]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert expiring.hits > 0 and gone_at_start.hits == 2
    assert [(r.path.rsplit("/", 1)[-1], r.status) for r in _injected(harness)] == [("jobs", 200)] * 2
    # A 410 makes kopf list again, then watch from the new list's resourceVersion.
    lists = collections.Counter(r.path.rsplit("/", 1)[-1] for r in harness.server.requests
                                if r.method == "GET" and not r.is_watch and r.path.endswith("s"))
    assert lists["modelreleases"] > 1 and lists["jobs"] > 1


def test_409s_on_status_patches_and_creates(harness: Harness):
    entries = harness.server.faults.load({"faults": [
        {"kind": "error", "status": 409, "method": "PATCH", "pathSuffix": "/status", "times": 3},
        # A create refused as AlreadyExists, though nothing is there: adopting finds nothing; tried again.
        {"kind": "error", "status": 409, "reason": "AlreadyExists", "method": "POST", "resource": "jobs",
         "times": 1},
        # A create carried out, and answered AlreadyExists: adopted, not made twice.
        {"kind": "error", "status": 409, "reason": "AlreadyExists", "method": "POST", "resource": "deployments",
         "served": True, "times": 1},
    ]})
    status = _run_release(harness)
    _assert_like_an_uninterrupted_run(harness, status)
    assert [entry.hits for entry in entries] == [3, 1, 1]
    assert [r.status for r in _injected(harness)] == [409] * 5
    assert sorted(d.metadata.name for d in harness.apps.list_namespaced_deployment("default").items) == [
        "digits-canary", "digits-stable"]


def test_a_status_write_that_happened_but_was_answered_504_is_announced_once(harness: Harness):
    # What a client timeout after the write looks like to the operator: it reads the release again, finds
    # the status it sent, and goes on as if the write had been answered (its Events are posted, once).
    (lying,) = harness.server.faults.load({"faults": [
        {"kind": "error", "status": 504, "method": "PATCH", "pathSuffix": "/status", "served": True, "times": 2},
    ]})
    status = _run_release(harness)
    assert lying.hits == 2
    spec = parse_spec(harness.get(RELEASE)["spec"])
    assert harness.jobs() == sorted(job_name(RELEASE, s.name, 1, 1, spec_hash(spec)) for s in spec.stages)
    assert [v["stage"] for v in status["history"]] == ["warmup", "full"]
    wait_for(lambda: "Released" in _event_counts(harness), "the Released event")
    counts = _event_counts(harness)
    assert counts == FAULT_FREE_EVENTS, counts
    # Each lost answer was followed by a read that found the status stored.
    log = harness.server.requests.snapshot()
    for index, record in enumerate(log):
        if record.injected and record.status == 504:
            assert any(r.method == "GET" and r.path.endswith(f"/modelreleases/{RELEASE}") for r in log[index + 1:])
