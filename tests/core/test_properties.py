"""Properties of the planner over random walks through releases (hypothesis)."""

from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrelease.api.spec import UndoAction
from modelrelease.core.analysis import Measurement
from modelrelease.core.model import JobObservation
from tests.core.world import FAILING, HEALTHY, QUIET, World, base_spec, result_for

ERRORS = {k: Measurement(k, error="prometheus unreachable") for k in HEALTHY}

events = st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([5, 15, 30, 61, 300])),
    st.tuples(st.just("job"), st.sampled_from(["ok", "ok", "ok", "bad-model", "fail", "no-result"])),
    st.tuples(st.just("metrics"), st.sampled_from(["healthy", "healthy", "failing", "quiet", "errors"])),
    st.tuples(st.just("action"), st.sampled_from(["promote", "promote_full", "abort", "retry", "undo"])),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("spec"), st.integers(min_value=1, max_value=3)),
    st.tuples(st.just("replicas"), st.integers(min_value=2, max_value=12)),
)

METRICS = {"healthy": HEALTHY, "failing": FAILING, "quiet": QUIET, "errors": ERRORS}


def _finish(world: World, kind: str) -> None:
    for name, job in list(world.jobs.items()):
        if job.phase != "Active":
            continue
        stage = next(r.name for r in world.status.stages if r.job_name == name)
        if kind == "fail":
            world.jobs[name] = JobObservation(name, "Failed", reason="exit code 75")
        elif kind == "no-result":
            world.jobs[name] = JobObservation(name, "Succeeded", result=None)
        else:
            accuracy = 0.3 if kind == "bad-model" else 0.95
            world.jobs[name] = JobObservation(name, "Succeeded", result_for(stage, accuracy, len(world.created_jobs)))


def _apply_event(world: World, raw: dict, event, counter: list[int]) -> dict:
    kind, arg = event
    if kind == "wait":
        world.wait(arg)
    elif kind == "job":
        _finish(world, arg)
    elif kind == "metrics":
        world.metrics = dict(METRICS[arg])
    elif kind == "action":
        counter[0] += 1
        request = f"{arg}-{counter[0]}"
        if arg == "undo":
            target = world.status.history[0].name if world.status.history else "missing"
            value = UndoAction(request_id=request, to_version=target)
        else:
            value = request
        world.spec = world.spec.model_copy(
            update={"actions": world.spec.actions.model_copy(update={arg: value})})
    elif kind == "pause":
        world.spec = world.spec.model_copy(update={"paused": arg})
    elif kind in ("spec", "replicas"):
        raw = copy.deepcopy(raw)
        if kind == "spec":
            raw["stages"][0]["training"]["epochs"] = 5 + arg
        else:
            raw["serving"]["replicas"] = arg
        keep = world.spec
        world.spec = World.of(raw).spec.model_copy(update={"paused": keep.paused, "actions": keep.actions})
        world.generation += 1
    return raw


def _position(world: World) -> tuple[int, int]:
    return (world.status.stage_index, world.status.step_index)


EXAMPLES = int(os.environ.get("PLANNER_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=60))
def test_random_walks_keep_the_invariants(walk):
    raw = base_spec()
    world = World.of(raw)
    counter = [0]
    world.step()
    world.settle()
    for event in walk:
        raw = _apply_event(world, raw, event, counter)
        before_position, before_hash, before_phase = _position(world), world.status.spec_hash, world.status.phase
        before_events = len(world.events)
        world.step()
        world.settle()  # re-planning after applying reaches a fixpoint (raises otherwise)
        status = world.status
        new_events = [e.reason for e in world.events[before_events:]]
        handled = [e.message for e in world.events[before_events:] if e.reason == "ActionHandled"]

        assert 0 <= status.canary_weight <= 100
        if status.stable is not None and "stable" in world.deployments:
            stable, canary = world.replicas()
            assert stable + canary == world.spec.serving.replicas
        restarted = status.spec_hash != before_hash or any(h.startswith(("retry", "abort", "undo")) for h in handled)
        if not restarted and before_phase not in ("RolledBack", "Failed", "Released"):
            assert _position(world) >= before_position, (before_position, _position(world), new_events)
        if "Promoting" in new_events and not any(h.startswith("promoteFull") for h in handled):
            last_stage = world.spec.stages[-1]
            assert status.stage_index == len(world.spec.stages) - 1
            assert status.step_index == len(last_stage.steps) - 1
            promoted_by_hand = any(h.startswith("promote ") for h in handled)
            assert promoted_by_hand or status.analysis.last_run_passed
        assert len(world.created_jobs) == len(set(world.created_jobs))

    # From wherever the walk ended, abort leads to the stable model on all replicas.
    world.spec = world.spec.model_copy(update={"paused": False, "actions": world.spec.actions.model_copy(
        update={"abort": "final-abort"})})
    world.step()
    world.settle()
    if world.status.stable is not None:
        assert world.replicas() == (world.spec.serving.replicas, 0)
        assert world.status.phase in ("RolledBack", "Released")
    else:
        assert world.replicas()[1] == 0
