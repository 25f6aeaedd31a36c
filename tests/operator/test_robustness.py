"""Several releases at once, bad specs, restarts at any moment, write conflicts, and write economy."""

from __future__ import annotations

import time

from modelrelease.api import parse_spec
from modelrelease.core.naming import job_name, spec_hash
from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for


def test_two_namespaces_and_a_bad_spec_do_not_interfere(harness: Harness):
    harness.core.create_namespace({"metadata": {"name": "team-a"}})
    harness.core.create_namespace({"metadata": {"name": "team-b"}})
    bad = release_spec(harness.prometheus.url)
    # The API refuses what its schema and CEL rules can state (an unknown optimizer, say); a duration
    # below the minimum is only the operator's to find.
    bad["analysis"]["interval"] = "500ms"
    harness.apply("broken", bad, namespace="team-a")
    harness.apply("digits", release_spec(harness.prometheus.url), namespace="team-a")
    harness.apply("digits", release_spec(harness.prometheus.url), namespace="team-b")
    broken = harness.wait_phase("broken", "Invalid", namespace="team-a")
    condition = next(c for c in broken["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True"
    assert "spec.analysis: interval must be at least 1s" in condition["message"]
    events = harness.wait_events("InvalidSpec", namespace="team-a")
    assert any(e.reason == "InvalidSpec" and e.involved_object.name == "broken" for e in events)
    for namespace in ("team-a", "team-b"):
        status = harness.wait_phase("digits", "Released", namespace=namespace)
        assert len(harness.jobs(namespace)) == 3 - (namespace == "team-a") + (namespace == "team-a")
        assert status["stable"]["stage"] == "full"
    assert not [j for j in harness.jobs("team-a") if j.startswith("broken")]
    # Fixing the spec lets the broken one start.
    # One Event per rejected generation, however many passes saw it.
    assert sum(e.count or 1 for e in events if e.reason == "InvalidSpec" and e.involved_object.name == "broken") == 1
    harness.patch_spec("broken", {"analysis": release_spec(harness.prometheus.url)["analysis"]}, namespace="team-a")
    fixed = harness.wait_phase("broken", "Released", namespace="team-a")
    assert next(c for c in fixed["conditions"] if c["type"] == "InvalidSpec")["status"] == "False"


def _outcome(harness: Harness, name: str = "digits") -> tuple:
    status = harness.status(name)
    history = [(v["stage"], v["id"]) for v in status["history"]]
    return status["phase"], history, harness.jobs()


def test_killed_in_every_phase_the_operator_resumes_to_the_same_outcome(harness: Harness):
    harness.training.delay = 1.5
    harness.apply("digits", release_spec(harness.prometheus.url))
    seen: list[tuple[str, int, int]] = []
    for _ in range(600):
        status = harness.status("digits")
        position = (status.get("phase", ""), status.get("stageIndex", 0), status.get("stepIndex", 0))
        if position[0] == "Released":
            break
        if position[0] and position not in seen:
            seen.append(position)
            harness.restart_operator()  # SIGKILL, then a fresh process
        time.sleep(0.1)
    phase, history, jobs = _outcome(harness)
    assert phase == "Released" and harness.starts > 5
    kinds = {p[0] for p in seen}
    assert {"Training", "Progressing", "Promoting"} <= kinds
    # Exactly the Jobs an uninterrupted run makes: one per stage attempt, same deterministic names.
    spec = parse_spec(harness.get("digits")["spec"])
    assert jobs == sorted(job_name("digits", s.name, 1, 1, spec_hash(spec)) for s in spec.stages)
    assert [stage for stage, _ in history] == ["warmup", "full"]


def test_killed_while_rolling_back_it_still_rolls_back_once(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")
    harness.rollout.hold = True  # the stable scale-up waits, so RollingBack lasts
    harness.prometheus.set("error_rate", canary=0.9, stable=0.0)
    harness.wait_phase("digits", "RollingBack")
    # The rollback's Event is posted after the status write that records it (so never twice); let it land,
    # then kill the operator in the middle of rolling back.
    harness.wait_events("AnalysisFailed")
    harness.restart_operator()
    harness.rollout.hold = False
    for namespace, name in harness.rollout.holding():
        harness.rollout.release(namespace, name)
    status = harness.wait_phase("digits", "RolledBack")
    assert status["failure"]["reason"] == "AnalysisFailed"
    harness.wait_events("AnalysisFailed")
    assert harness.reasons().count("AnalysisFailed") == 1
    assert len(harness.jobs()) == 2


def test_a_409_on_the_status_patch_is_retried_and_converges(harness: Harness):
    fault = harness.server.fail_next("PATCH", "/status", status=409, times=3)
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "Released")
    assert fault.hits == 3
    assert len(harness.jobs()) == 3 and [v["stage"] for v in status["history"]] == ["warmup", "full"]


def _writes(harness: Harness) -> list:
    # The operator's own writes; kopf's bookkeeping (finalizer, annotations) happens once up front.
    return [r for r in harness.server.requests.writes()
            if "/modelreleases" in r.path or "/deployments" in r.path or "/jobs" in r.path
            or "/events" in r.path or "/services" in r.path]


def test_idle_and_per_step_write_economy(harness: Harness):
    spec = release_spec(harness.prometheus.url)
    spec["stages"][1]["steps"][1]["duration"] = "3s"
    harness.apply("digits", spec)
    wait_for(lambda: harness.status("digits").get("canaryWeight") == 10
             and harness.status("digits").get("stageIndex") == 1, "the grow canary at 10")
    # The Events of the transition that got here are posted after its status patch: let them land
    # before counting, or they would be counted as the step's.
    grow = spec["stages"][1]["name"]
    wait_for(lambda: any(e.reason == "CanaryStarted" and f"stage {grow}:" in (e.message or "")
                         for e in harness.events("default")), f"stage {grow}'s CanaryStarted event")
    harness.server.requests.reset()
    harness.prometheus.queries.clear()
    wait_for(lambda: harness.status("digits").get("canaryWeight") == 50, "the step to 50")
    # Events are posted after the status patch they describe: wait for the step's one to land.
    wait_for(lambda: any("/events" in r.path and (r.body or {}).get("reason") == "StepAdvanced"
                         for r in _writes(harness)), "the StepAdvanced event to be posted")
    time.sleep(0.5)  # and for anything else the step might (wrongly) still write
    writes = _writes(harness)
    analysis_runs = sum(1 for q in harness.prometheus.queries if q.startswith("error_rate") and "canary" in q)
    deployments = [r for r in writes if "/deployments/" in r.path]
    events = [r for r in writes if "/events" in r.path]
    status_patches = [r for r in writes if r.path.endswith("/status")]
    print(f"step 10->50: {len(deployments)} Deployment patches, {len(events)} Events, "
          f"{len(status_patches)} status patches for {analysis_runs} analysis runs")
    # The step itself: scale canary, scale stable, one Event, one status patch; every analysis run
    # records its verdict in status (one patch each, sometimes the same one).
    assert sorted(r.path.rsplit("/", 1)[-1] for r in deployments) == ["digits-canary", "digits-stable"]
    assert [r.body.get("reason") for r in events] == ["StepAdvanced"]
    assert len(status_patches) <= 1 + analysis_runs
    assert len(writes) == len(deployments) + len(events) + len(status_patches)
    # Idle: a released model with nothing changing causes no writes at all.
    harness.wait_phase("digits", "Released")
    time.sleep(1)
    harness.server.requests.reset()
    time.sleep(5)
    idle = _writes(harness)
    print(f"idle 5 s after release: {len(idle)} writes")
    assert idle == [], [(r.method, r.path) for r in idle]


def test_liveness_endpoint_and_json_logs(harness: Harness):
    import json
    import urllib.request

    from modelrelease_local.ports import free_port

    port = free_port()
    harness.kill_operator()
    harness.start_operator("--log-format", "json", "--liveness", f"http://127.0.0.1:{port}/healthz")

    def alive() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_for(alive, "the liveness endpoint")
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Released")
    lines = [line for line in harness.operator_log().splitlines() if line.startswith("{")]
    assert lines and all("message" in json.loads(line) for line in lines)
