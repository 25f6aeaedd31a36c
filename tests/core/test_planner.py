"""The planner through whole releases, one scenario per transition."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from modelrelease.core.analysis import Measurement
from modelrelease.core.model import ApplyDeployment, JobObservation
from tests.core.world import FAILING, QUIET, World, base_spec, result_for


def test_full_release_trains_each_stage_once_and_promotes_the_last():
    world = World.of()
    world.run_until({"Released"})
    assert [r.phase for r in world.status.stages] == ["Succeeded"] * 3
    assert len(world.created_jobs) == 3
    assert world.replicas() == (10, 0)
    history = world.status.history
    assert [v.stage for v in history] == ["warmup", "full"]
    assert world.status.stable.id == history[-1].id
    assert world.status.canary is None
    # lineage: each stage starts from the previous stage's model
    grow, full = world.status.stages[1].version, world.status.stages[2].version
    assert grow.parent == world.status.stages[0].version.id
    assert full.parent == grow.id
    assert "FirstRelease" in world.reasons() and world.reasons()[-1] == "Released"
    ready = {c.type: c.status for c in world.status.conditions}
    assert ready["Ready"] == "True" and ready["Progressing"] == "False" and ready["Degraded"] == "False"


def test_first_model_becomes_stable_directly_with_change_gates_skipped():
    world = World.of()
    world.step()
    world.finish_jobs()
    world.step()
    assert world.status.stable is not None and world.status.stable.stage == "warmup"
    assert world.replicas() == (10, 0)
    assert world.status.stage_index == 1 and world.status.phase == "Training"


def test_canary_weights_follow_the_steps_and_conserve_replicas():
    world = World.of()
    seen = set()
    for _ in range(400):
        world.finish_jobs()
        world.step()
        world.settle()
        stable, canary = world.replicas()
        if world.status.stable:
            assert stable + canary == 10
        seen.add((world.status.stage_index, world.status.canary_weight, canary))
        if world.status.phase == "Released":
            break
        world.wait(15)
    assert (1, 10, 1) in seen and (1, 50, 5) in seen and (2, 50, 5) in seen and (2, 100, 10) in seen


def test_previous_canary_keeps_serving_while_the_next_stage_trains():
    world = World.of()
    world.run_until({"Progressing"})  # stage grow at weight 10
    for _ in range(40):
        world.step()
        world.settle()
        if world.status.phase == "Training":
            break
        world.wait(15)
    assert world.status.stage_index == 2 and world.status.phase == "Training"
    assert world.status.canary.stage == "grow" and world.status.canary_weight == 50
    assert world.replicas() == (5, 5)


def test_failed_gate_rolls_back_with_the_gate_named():
    world = World.of()
    world.run_until_training(1)  # warmup released, grow training
    world.finish_jobs(accuracy=0.5)
    world.step()
    world.settle()
    assert world.status.phase == "RolledBack"
    assert world.status.failure.reason == "GateFailed"
    assert "accuracy" in world.status.failure.message and ">= 0.8" in world.status.failure.message
    assert world.replicas() == (10, 0)
    assert world.status.stages[1].phase == "Failed"
    assert any(e.reason == "GateFailed" and e.type == "Warning" for e in world.events)


def test_a_diverged_metric_fails_its_gate_and_never_reaches_the_status():
    # A trainer whose loss went NaN reports it as such; an API server refuses NaN in JSON, and NaN is
    # unequal to itself (a status holding it would differ from itself on every pass).
    world = World.of()
    world.run_until_training(1)
    for name, job in list(world.jobs.items()):
        if job.phase == "Active":
            result = result_for("grow")
            result["metrics"] = {**result["metrics"], "accuracy": float("nan"), "loss": float("inf")}
            world.jobs[name] = JobObservation(name, "Succeeded", result)
    world.step()
    world.settle()
    assert world.status.failure.reason == "GateFailed"
    assert "failed its gate accuracy reported" in world.status.failure.message
    assert any(g.message == "the trainer reported no usable accuracy" for g in world.status.stages[1].gates)
    assert "accuracy" not in world.status.stages[1].version.metrics
    json.dumps(world.status.model_dump(by_alias=True, mode="json"), allow_nan=False)  # raises on NaN or Infinity


def test_failed_gate_without_stable_fails_the_release():
    world = World.of()
    world.step()
    world.finish_jobs(accuracy=0.1)
    world.step()
    assert world.status.phase == "Failed"
    assert "deployments" not in world.__dict__ or world.replicas() == (0, 0)


def test_failed_job_rolls_back_with_its_reason():
    world = World.of()
    world.run_until_training(1)
    world.fail_jobs("OOMKilled")
    world.step()
    world.settle()
    assert world.status.phase == "RolledBack"
    assert world.status.failure.reason == "TrainingFailed" and "OOMKilled" in world.status.failure.message
    degraded = next(c for c in world.status.conditions if c.type == "Degraded")
    assert degraded.status == "True" and degraded.reason == "TrainingFailed"
    trained = next(c for c in world.status.conditions if c.type == "TrainingSucceeded")
    assert trained.status == "False"


def test_job_without_a_result_is_a_failure_not_a_model():
    world = World.of()
    world.step()
    name = world.created_jobs[0]
    from modelrelease.core.model import JobObservation
    world.jobs[name] = JobObservation(name, "Succeeded", result=None)
    world.step()
    assert world.status.phase == "Failed" and "no valid result" in world.status.failure.message


def test_failed_analysis_rolls_back_naming_check_value_and_bound():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    failure = world.status.failure
    assert failure.reason == "AnalysisFailed" and failure.check == "errors"
    assert failure.value == 0.5 and failure.bound == "<= 0.05"
    assert world.replicas() == (10, 0)
    assert world.status.history[-1].stage == "warmup"


def test_inconclusive_analysis_pauses_and_never_promotes():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(QUIET)
    world.run_until({"Paused"})
    assert world.status.pause_reason == "InconclusiveAnalysis"
    assert "waiting for traffic" in world.status.message
    stage, weight = world.status.stage_index, world.status.canary_weight
    for _ in range(20):
        world.wait(60)
        world.step()
    assert world.status.phase == "Paused" and (world.status.stage_index, world.status.canary_weight) == (stage, weight)


def test_retry_resumes_an_analysis_pause():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(QUIET)
    world.run_until({"Paused"})
    world.metrics = {k: Measurement(k, canary=0.0, stable=0.0, samples=100) for k in ("errors", "latency")}
    world.spec = world.spec.model_copy(update={"actions": world.spec.actions.model_copy(update={"retry": "r1"})})
    world.step()
    assert world.status.phase == "Progressing" and world.status.handled_actions.retry == "r1"
    world.run_until({"Released"})


def test_errors_pause_and_never_count_as_success():
    world = World.of()
    world.run_until({"Progressing"})
    successes = world.status.analysis.successes
    world.metrics = {k: Measurement(k, error="prometheus unreachable") for k in ("errors", "latency")}
    world.run_until({"Paused"})
    assert world.status.analysis.successes == successes and not world.status.analysis.last_run_passed
    assert world.status.analysis.consecutive_errors == 5
    assert world.status.phase == "Paused"


def test_spec_change_mid_release_withdraws_canary_and_restarts_at_stage_one():
    world = World.of()
    world.run_until({"Progressing"})
    stable = world.status.stable
    raw = base_spec()
    raw["stages"][0]["training"]["epochs"] = 7
    world.spec = World.of(raw).spec
    world.generation = 2
    world.step()
    world.settle()
    assert world.status.stage_index == 0 and world.status.phase == "Training"
    assert world.status.stable == stable and world.status.canary is None
    assert world.replicas() == (10, 0)
    assert "SpecChanged" in world.reasons()
    assert world.status.observed_generation == 2


def test_control_fields_do_not_restart_the_release():
    world = World.of()
    world.run_until({"Progressing"})
    index, jobs = world.status.stage_index, list(world.created_jobs)
    world.spec = world.spec.model_copy(update={"paused": True})
    world.step()
    assert world.status.phase == "Paused" and world.status.pause_reason is None
    world.wait(600)
    world.step()
    assert world.status.stage_index == index and world.created_jobs == jobs
    world.spec = world.spec.model_copy(update={"paused": False})
    world.step()
    assert world.status.phase == "Progressing"
    world.run_until({"Released"})


def _act(world: World, **actions) -> None:
    world.spec = world.spec.model_copy(update={"actions": world.spec.actions.model_copy(update=actions)})


def test_abort_rolls_back_once_and_reapplying_is_a_noop():
    world = World.of()
    world.run_until({"Progressing"})
    _act(world, abort="a1")
    world.step()
    world.settle()
    assert world.status.phase == "RolledBack" and world.status.failure.reason == "Aborted"
    events = len(world.events)
    world.step()
    world.settle()
    assert len(world.events) == events


def test_abort_while_training_deletes_the_job():
    world = World.of()
    world.run_until_training(1)
    _act(world, abort="a1")
    result = world.step()
    assert any(type(a).__name__ == "DeleteJob" for a in result.actions)


def test_promote_finishes_the_current_step_now():
    world = World.of()
    world.run_until({"Progressing"})
    assert world.status.step_index == 0
    _act(world, promote="p1")
    world.step()
    assert world.status.step_index == 1 and world.status.canary_weight == 50


def test_promote_full_makes_the_canary_stable():
    world = World.of()
    world.run_until({"Progressing"})
    canary = world.status.canary
    _act(world, promote_full="pf1")
    world.step()
    assert world.status.phase == "Promoting"
    for _ in range(10):
        world.settle()
        if world.status.phase == "Released":
            break
    assert world.status.phase == "Released" and world.status.stable.id == canary.id
    assert world.replicas() == (10, 0)


def _promoting_world() -> World:
    """A release run to its last stage's promotion, whose Deployments from now on take a pass to be ready."""
    world = World.of()
    for _ in range(400):
        world.finish_jobs()
        world.step()
        if world.status.phase == "Promoting":
            break
        world.settle()
        world.wait(15)
    assert world.status.phase == "Promoting"
    world.instant_ready = False
    return world


def test_promotion_hands_over_in_batches_without_doubling():
    world = _promoting_world()
    totals = []
    for _ in range(30):
        world.step(measure=False)
        stable, canary = world.replicas()
        totals.append(stable + canary)
        # the Deployment controller makes the stable pods ready one pass later
        seen = world.deployments["stable"]
        world.deployments["stable"] = dataclasses.replace(seen, ready=seen.replicas)
        if world.status.phase == "Released":
            break
    assert world.status.phase == "Released" and set(totals) == {10}
    assert len(totals) >= 4  # 10 replicas move in batches of 3


def test_promotion_writes_the_shrinking_track_first_and_never_goes_back():
    # Each pass patches two Deployments: the one that shrinks goes first, so the total never exceeds
    # serving.replicas even between the writes. Right after a scale patch the stable reports nothing
    # ready (its controller has not seen the new generation): that must not hand replicas back.
    world = _promoting_world()
    stables = []
    for lagging in [True, False] * 15:
        before = dict(zip(("stable", "canary"), world.replicas(), strict=True))
        result = world.step(measure=False)
        for action in result.actions:
            if isinstance(action, ApplyDeployment):
                before[action.track] = action.replicas
                assert sum(before.values()) <= 10, result.actions
        stables.append(world.replicas()[0])
        seen = world.deployments["stable"]
        world.deployments["stable"] = dataclasses.replace(seen, ready=0 if lagging else seen.replicas)
        if world.status.phase == "Released":
            break
    assert world.status.phase == "Released" and world.replicas() == (10, 0)
    assert stables == sorted(stables), stables


def test_retry_after_rollback_trains_a_new_attempt():
    world = World.of()
    world.run_until_training(1)
    world.fail_jobs()
    world.step()
    world.settle()
    assert world.status.phase == "RolledBack"
    _act(world, retry="r1")
    world.step()
    assert world.status.stages[1].attempt == 2 and world.status.phase == "Training"
    assert len(set(world.created_jobs)) == len(world.created_jobs) == 3
    world.run_until({"Released"})


def test_retry_after_analysis_rollback_reuses_the_gated_model():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    jobs = list(world.created_jobs)
    world.metrics = dict(QUIET)
    world.metrics = {k: Measurement(k, canary=0.0, stable=0.0, samples=100) for k in ("errors", "latency")}
    _act(world, retry="r1")
    world.step()
    assert world.status.phase == "Progressing" and world.created_jobs == jobs


def test_undo_restores_a_kept_version():
    world = World.of()
    world.run_until({"Released"})
    first = world.status.history[0]
    from modelrelease.api.spec import UndoAction
    _act(world, undo=UndoAction(request_id="u1", to_version=first.name))
    world.step()
    world.settle()
    assert world.status.stable.id == first.id and world.status.stable.restored
    assert world.deployments["stable"].version == first.id and world.replicas() == (10, 0)
    assert world.status.history[-1].id == first.id and len(world.status.history) == 3


def test_undo_to_an_unknown_version_is_ignored_with_a_warning():
    world = World.of()
    world.run_until({"Released"})
    stable = world.status.stable
    from modelrelease.api.spec import UndoAction
    _act(world, undo=UndoAction(request_id="u1", to_version="nope"))
    world.step()
    assert world.status.stable == stable
    assert world.events[-1].reason == "ActionIgnored" and "not among the kept versions" in world.events[-1].message


def test_actions_in_the_wrong_phase_are_recorded_and_ignored():
    world = World.of()
    world.step()
    _act(world, promote="p1", promote_full="pf1")
    world.step()
    assert world.status.handled_actions.promote == "p1"
    assert [e.reason for e in world.events[-2:]] == ["ActionIgnored", "ActionIgnored"]


def test_history_is_bounded_by_revision_history_limit():
    raw = base_spec(revisionHistoryLimit=2)
    world = World.of(raw)
    world.run_until({"Released"})
    for n in range(3):
        raw2 = copy.deepcopy(raw)
        raw2["stages"][0]["training"]["epochs"] = 10 + n
        world.spec = World.of(raw2).spec
        world.run_until({"Released"})
    assert len(world.status.history) == 2


def test_prebuilt_model_stage_skips_training():
    raw = base_spec()
    raw["stages"][0] = {"name": "warmup", "modelUri": "/srv/models/prebuilt", "steps": [{"weight": 10}]}
    world = World.of(raw)
    world.step()
    assert world.status.stable.path == "/srv/models/prebuilt"
    assert world.status.stages[0].job_name is None
    assert [r.job_name is not None for r in world.status.stages] == [False, True, False]


def test_restarted_planner_resumes_from_status_alone():
    """A new World built from the old status and cluster (the operator restarted) behaves the same."""
    reference = World.of()
    reference.run_until({"Released"})
    world = World.of()
    world.run_until({"Progressing"})
    resumed = World(spec=world.spec, status=world.status, now=world.now, jobs=dict(world.jobs),
                    deployments=dict(world.deployments), service=world.service,
                    created_jobs=list(world.created_jobs))
    resumed.run_until({"Released"})
    assert len(resumed.created_jobs) == len(reference.created_jobs) == 3
    assert [v.stage for v in resumed.status.history] == [v.stage for v in reference.status.history]


def test_weight_100_step_promotes_although_stable_has_no_traffic_to_compare():
    world = World.of()
    world.run_until({"Progressing"})
    for _ in range(200):
        if world.status.canary_weight == 100:
            world.metrics = {k: Measurement(k, canary=m.canary, stable=None, samples=100)
                             for k, m in world.metrics.items()}
        world.finish_jobs()
        world.step()
        world.settle()
        if world.status.phase in ("Released", "Paused"):
            break
        world.wait(15)
    assert world.status.phase == "Released"


def test_request_ids_present_at_creation_are_recorded_not_acted_on():
    raw = base_spec(actions={"abort": "left-over", "promoteFull": "old"})
    world = World.of(raw)
    world.step()
    assert world.status.phase == "Training"
    assert world.status.handled_actions.abort == "left-over"
    assert "ActionHandled" not in world.reasons()


def test_promote_out_of_an_analysis_pause_starts_the_streaks_afresh():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(QUIET)
    world.run_until({"Paused"})
    _act(world, promote="p1")
    world.step()
    assert world.status.analysis.inconclusive == 0 and world.status.pause_reason is None


def test_query_errors_pause_with_their_own_reason():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = {k: Measurement(k, error="unreachable") for k in ("errors", "latency")}
    world.run_until({"Paused"})
    assert world.status.pause_reason == "AnalysisErrors" and "AnalysisErrors" in world.reasons()


def test_abort_deletes_a_job_created_but_not_yet_observed():
    world = World.of()
    world.run_until_training(1)
    name = world.status.stages[1].job_name
    world.jobs.pop(name)  # the create is not visible yet
    _act(world, abort="a1")
    result = world.step()
    assert any(type(a).__name__ == "DeleteJob" and a.name == name for a in result.actions)


def test_serving_and_analysis_changes_apply_in_place_without_retraining():
    world = World.of()
    world.run_until({"Released"})
    jobs, run = list(world.created_jobs), world.status.run
    raw = base_spec()
    raw["serving"] = {"replicas": 12, "image": "registry.example/server:2"}
    raw["analysis"]["interval"] = "1m"
    world.spec = World.of(raw).spec
    world.step()
    world.settle()
    assert world.status.phase == "Released" and world.status.run == run and world.created_jobs == jobs
    assert world.replicas() == (12, 0)
    from modelrelease.core.naming import serving_hash
    assert world.deployments["stable"].serving_hash == serving_hash(world.spec)
    assert "SpecChanged" not in world.reasons()[-3:]


def test_a_canary_that_fails_while_the_next_stage_trains_is_named_in_the_failure():
    world = World.of()
    world.run_until({"Progressing"})
    while not (world.status.phase == "Training" and world.status.stage_index == 2):
        world.step()
        world.settle()
        world.wait(15)
    world.metrics = dict(FAILING)
    for _ in range(20):  # the full stage's Job keeps running
        world.step()
        world.settle()
        if world.status.phase == "RolledBack":
            break
        world.wait(15)
    assert world.status.phase == "RolledBack" and world.status.failure.stage == "grow"
    assert [r.phase for r in world.status.stages] == ["Succeeded", "Succeeded", "Failed"]


def test_a_rolled_back_canary_stage_is_marked_failed():
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    assert world.status.stages[1].phase == "Failed"


def _change_training(world: World) -> None:
    raw = base_spec()
    raw["stages"][0]["training"]["epochs"] = 7
    world.spec = World.of(raw).spec
    world.generation += 1


@pytest.mark.parametrize(("withdraw", "settled"), [
    (lambda world: _act(world, abort="a1"), "RolledBack"),
    (_change_training, "Training"),  # the release starts again; the old canary still hands back gently
])
def test_a_canary_at_weight_100_hands_back_in_batches_without_extra_pods(withdraw, settled):
    world = World.of()
    for _ in range(400):
        world.finish_jobs()
        world.step()
        world.settle()
        if world.status.phase == "Progressing" and world.status.canary_weight == 100:
            break
        world.wait(15)
    assert world.replicas() == (0, 10)
    world.instant_ready = False
    withdraw(world)
    capacity, totals, canaries = [], [], []
    for _ in range(10):
        world.step(measure=False)
        stable, canary = world.deployments["stable"], world.deployments["canary"]
        # Canary pods are ready; stable pods only as far as the Deployment controller got (one pass behind).
        capacity.append(stable.ready + canary.replicas)
        totals.append(stable.replicas + canary.replicas)
        canaries.append(canary.replicas)
        world.deployments["stable"] = dataclasses.replace(stable, ready=stable.replicas)
        if world.replicas() == (10, 0) and world.status.phase == settled:
            break
    assert world.status.phase == settled and world.replicas() == (10, 0)
    assert set(totals) == {10}  # never more pods than replicas
    assert min(capacity) >= 7, capacity  # at most one batch (3 of 10) short of full capacity
    assert canaries == sorted(canaries, reverse=True) and canaries[0] == 7 and canaries[-1] == 0
