"""One-shot requests: from spec.actions and from annotations, each id fires once in a release's life."""

from __future__ import annotations

from modelrelease.api.labels import ANNOTATION_PAUSED, ANNOTATION_REQUESTS, ANNOTATION_UNDO_TO
from modelrelease.api.status import HandledActions
from modelrelease.core.requests import KEPT_REQUESTS
from tests.core.world import FAILING, HEALTHY, World


def act(world: World, **actions: str) -> None:
    world.spec = world.spec.model_copy(update={"actions": world.spec.actions.model_copy(update=actions)})


def rolled_back() -> World:
    world = World.of()
    world.run_until({"Progressing"})
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    world.metrics = dict(HEALTHY)
    return world


def retries(world: World) -> list[str]:
    return [r.id for r in world.status.handled_requests if r.action == "retry"]


def test_an_id_git_restores_after_a_newer_one_does_not_fire_again() -> None:
    # Git holds retry r-1; a person patches r-2; self-heal puts r-1 back: two retries, not three.
    world = rolled_back()
    act(world, retry="r-1")
    world.step()
    assert world.status.phase == "Progressing"
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    act(world, retry="r-2")
    world.step()
    assert world.status.phase == "Progressing"
    world.metrics = dict(FAILING)
    world.run_until({"RolledBack"})
    act(world, retry="r-1")
    world.step()
    world.settle()
    assert retries(world) == ["r-1", "r-2"]
    assert world.status.phase == "RolledBack"
    assert world.reasons().count("ActionHandled") == 2 and "ActionIgnored" not in world.reasons()


def test_an_annotation_request_fires_once_and_stays_harmless() -> None:
    world = World.of()
    world.run_until({"Progressing"})
    world.annotations = {ANNOTATION_REQUESTS["abort"]: "kubectl-1"}
    world.step()
    world.settle()
    assert world.status.phase == "RolledBack" and world.status.failure and world.status.failure.reason == "Aborted"
    [handled] = world.status.handled_requests
    assert (handled.action, handled.id, handled.source, handled.outcome) == ("abort", "kubectl-1", "annotation",
                                                                             "Handled")
    for _ in range(3):
        world.step()
    assert len(world.status.handled_requests) == 1 and world.reasons().count("ActionHandled") == 1


def test_the_same_action_from_spec_and_annotation_at_once_fires_once() -> None:
    world = World.of()
    world.run_until({"Progressing"})
    act(world, promote="git-1")
    world.annotations = {ANNOTATION_REQUESTS["promote"]: "kubectl-1"}
    step_before = world.status.step_index, world.status.stage_index
    world.step()
    outcomes = [(r.id, r.outcome) for r in world.status.handled_requests]
    assert outcomes == [("git-1", "Handled"), ("kubectl-1", "Ignored")]
    assert (world.status.step_index, world.status.stage_index) != step_before
    assert "in the same pass" in world.status.handled_requests[1].message


def test_annotation_requests_present_at_creation_are_recorded_not_acted_on() -> None:
    world = World.of(annotations={ANNOTATION_REQUESTS["abort"]: "copied-1"})
    world.step()
    [adopted] = world.status.handled_requests
    assert adopted.outcome == "Ignored" and adopted.message == "present when the release was created"
    world.run_until({"Progressing"})
    assert world.status.failure is None


def test_the_record_is_bounded_and_keeps_the_newest() -> None:
    world = World.of()
    world.run_until({"Released"})
    for n in range(KEPT_REQUESTS + 5):
        world.annotations = {ANNOTATION_REQUESTS["promote"]: f"p-{n}"}
        world.step()
    kept = world.status.handled_requests
    assert len(kept) == KEPT_REQUESTS and kept[-1].id == f"p-{KEPT_REQUESTS + 4}" and kept[0].id == "p-5"
    assert all(r.outcome == "Ignored" for r in kept)  # nothing to promote once released


def test_status_from_before_the_record_still_knows_its_last_ids() -> None:
    world = World.of()
    world.run_until({"Progressing"})
    act(world, abort="old-1")
    world.status = world.status.model_copy(update={"handled_actions": HandledActions(abort="old-1")})
    world.step()
    assert world.status.phase == "Progressing" and world.status.handled_requests == []


def test_the_paused_annotation_holds_and_releasing_it_resumes() -> None:
    world = World.of()
    world.run_until({"Progressing"})
    world.annotations = {ANNOTATION_PAUSED: "true"}
    world.step()
    paused = next(c for c in world.status.conditions if c.type == "Paused")
    assert world.status.phase == "Paused" and paused.reason == "PausedByRequest"
    assert "modelrelease.io/paused" in world.status.message
    world.annotations = {ANNOTATION_PAUSED: "false"}
    world.step()
    assert world.status.phase == "Progressing"


def test_an_undo_annotation_without_a_version_is_ignored_with_the_fix() -> None:
    world = World.of()
    world.run_until({"Released"})
    world.annotations = {ANNOTATION_REQUESTS["undo"]: "u-1"}
    world.step()
    [ignored] = world.status.handled_requests
    assert ignored.outcome == "Ignored" and ANNOTATION_UNDO_TO in ignored.message
    stable = world.status.history[0].name
    world.annotations = {ANNOTATION_REQUESTS["undo"]: "u-2", ANNOTATION_UNDO_TO: stable}
    world.step()
    assert world.status.handled_requests[-1].outcome == "Handled" and world.status.stable
    assert world.status.stable.name == stable and world.status.stable.restored
