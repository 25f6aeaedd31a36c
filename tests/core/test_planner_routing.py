"""Whole releases with traffic routing through an HTTPRoute, in the pure planner."""

from __future__ import annotations

from typing import Any

import pytest

from modelrelease.api import InvalidSpecError, parse_spec
from modelrelease.core.model import ApplyDeployment, SetRoute
from modelrelease.core.route_state import HeaderMatch, RouteObservation, RouteState
from tests.core.world import FAILING, World, base_spec


def routed_spec(**serving: Any) -> dict[str, Any]:
    spec = base_spec()
    spec["serving"] = {"replicas": 10, "trafficRouting": {"gatewayAPI": {"httpRoute": "digits-route"}}, **serving}
    spec["stages"][1]["steps"] = [
        {"weight": 0, "duration": "1m", "mirror": {"percent": 20}},
        {"weight": 5, "duration": "1m", "canaryScale": {"replicas": 1},
         "headerRoute": {"name": "X-Canary", "value": "always"}},
        {"weight": 50, "duration": "1m"},
    ]
    return spec


def _at(world: World, stage: int, step: int) -> None:
    for _ in range(400):
        if (world.status.phase, world.status.stage_index, world.status.step_index) == ("Progressing", stage, step):
            return
        world.finish_jobs()
        world.step()
        world.settle()
        world.wait(15)
    raise AssertionError(f"never reached stage {stage} step {step}: {world.status.phase}")


def test_the_route_carries_each_steps_weight_exactly_while_the_stable_keeps_every_replica():
    world = World.of(routed_spec())
    _at(world, 1, 0)
    assert world.route is not None and world.route.state == RouteState(0, None, 20)
    assert world.replicas() == (10, 1)  # a shadow step: one canary pod answers the mirrored copies
    assert world.track_services == {"stable", "canary"}
    _at(world, 1, 1)
    assert world.route.state == RouteState(5, HeaderMatch("X-Canary", "always"), None)
    assert world.replicas() == (10, 1)  # 5% of traffic on one pod, not ceil(10 * 5%) doubled
    _at(world, 1, 2)
    assert world.route.state == RouteState(50, None, None)
    assert world.replicas() == (10, 5)  # matchTrafficWeight by default


def test_a_rollback_takes_all_traffic_off_the_canary_before_any_canary_pod_goes():
    world = World.of(routed_spec())
    _at(world, 1, 2)
    world.metrics = dict(FAILING)
    world.wait(30)
    plan = world.step()
    route_first = [a for a in plan.actions if isinstance(a, SetRoute | ApplyDeployment)]
    assert route_first == [SetRoute(RouteState.stable_only())]  # the canary's pods stay, for now
    assert world.status.route_released_at == world.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    # scaleDownDelay (30s by default) for the Gateway to apply the route and requests in flight to end.
    world.wait(29)
    assert not [a for a in world.step().actions if isinstance(a, ApplyDeployment) and a.track == "canary"]
    assert world.replicas() == (10, 5) and world.status.phase == "RollingBack"
    world.wait(1)
    assert ApplyDeployment("canary", None, 0, exists=True) in world.step().actions
    world.run_until({"RolledBack"})
    assert world.route is not None and world.route.state == RouteState.stable_only()
    assert world.replicas() == (10, 0)
    # Every route write that took traffic away came while the canary still had its pods.
    last_off = next(w for w in reversed(world.route_writes) if w[0] == RouteState.stable_only())
    assert last_off[1]["canary"] == 5


def test_a_promotion_moves_the_stable_first_then_the_route_then_the_canary_pods():
    world = World.of(routed_spec())
    _at(world, 2, 1)
    world.instant_ready = False  # from here on, pods become ready when the test says so
    for _ in range(20):
        world.wait(30)
        world.step()
        if world.status.phase == "Promoting":
            break
    assert world.route is not None and world.route.state.canary_weight == 100
    world.step()
    stable = world.deployments["stable"]
    assert stable.replicas == 10 and stable.version == world.status.canary.id
    assert world.route.state.canary_weight == 100  # the stable's new pods are not ready yet
    assert world.deployments["canary"].replicas > 0
    world.deployments["stable"] = type(stable)("stable", stable.version, 10, 10, stable.serving_hash)
    world.step()
    assert world.route.state == RouteState.stable_only() and world.deployments["canary"].replicas > 0
    world.wait(30)
    world.step()
    assert world.deployments["canary"].replicas == 0
    world.step()
    assert world.status.phase == "Released"


def test_an_unusable_route_holds_the_steps_and_says_so_once():
    world = World.of(routed_spec())
    _at(world, 1, 0)
    world.route = RouteObservation("digits-route", problem="HTTPRoute digits-route has no rule ...")
    for _ in range(8):
        world.wait(30)
        world.step()
    assert (world.status.stage_index, world.status.step_index) == (1, 0)
    ready = next(c for c in world.status.conditions if c.type == "RouteReady")
    assert ready.status == "False" and ready.reason == "RouteInvalid" and "has no rule" in ready.message
    assert [e.reason for e in world.events].count("RouteInvalid") == 1
    world.route = RouteObservation("digits-route", state=RouteState(0, None, 20))
    _at(world, 1, 1)
    assert next(c for c in world.status.conditions if c.type == "RouteReady").status == "True"


def test_without_routing_nothing_is_routed_and_the_pods_carry_the_split():
    world = World.of()
    world.run_until({"Released"})
    assert world.route is None and world.route_writes == [] and world.track_services == set()


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda s: s["serving"].pop("trafficRouting"), "needs serving.trafficRouting"),
    (lambda s: s["stages"][2]["steps"][1].update(mirror={"percent": 10}), "at weight 100 every request"),
    (lambda s: s["stages"][1]["steps"][1].update(canaryScale={"replicas": 0}), "0 canary pods cannot take traffic"),
    (lambda s: s["stages"][1]["steps"][1].update(canaryScale={"replicas": 1, "percent": 5}), "exactly one of"),
    (lambda s: s["stages"][1]["steps"][1].update(headerRoute={"name": "X Canary", "value": "a"}), "headerRoute.name"),
    (lambda s: s["stages"][1]["steps"][0].update(mirror={"percent": 150}), "mirror.percent"),
])
def test_routing_fields_that_cannot_work_are_refused_naming_the_field(change, fragment):
    spec = routed_spec()
    change(spec)
    with pytest.raises(InvalidSpecError, match=fragment):
        parse_spec(spec)


def test_a_pause_keeps_the_steps_header_route_and_canary_scale():
    world = World.of(routed_spec())
    _at(world, 1, 1)
    before = (world.route.state if world.route else None, world.replicas())
    world.spec = world.spec.model_copy(update={"paused": True})
    world.step()
    assert world.status.phase == "Paused"
    assert (world.route.state if world.route else None, world.replicas()) == before


def test_while_the_next_stage_trains_the_last_canary_keeps_its_steps_route_and_pods():
    spec = routed_spec()
    spec["stages"][1]["steps"][2].update(canaryScale={"replicas": 2}, headerRoute={"name": "X-Canary", "value": "a"})
    world = World.of(spec)
    _at(world, 1, 2)
    during_step = (world.route.state if world.route else None, world.replicas())
    world.run_until_training(2)
    assert world.status.phase == "Training" and world.status.canary is not None
    assert (world.route.state if world.route else None, world.replicas()) == during_step
    assert during_step == (RouteState(50, HeaderMatch("X-Canary", "a")), (10, 2))


def test_more_canary_traffic_waits_for_the_canary_pods_of_its_step():
    world = World.of(routed_spec())
    _at(world, 1, 1)  # weight 5 on one ready pod
    world.instant_ready = False  # from here on, pods become ready when the test says so
    for _ in range(12):
        world.wait(15)
        world.step()
        if world.status.step_index == 2:
            break
    assert world.status.canary_weight == 50 and world.deployments["canary"].replicas == 5
    # Five canary pods wanted, one ready: the route stays as it was, the canary at 5%.
    assert world.route is not None and world.route.state.canary_weight == 5
    seen = world.deployments["canary"]
    world.deployments["canary"] = type(seen)("canary", seen.version, 5, 5, seen.serving_hash)
    world.step()
    assert world.route.state == RouteState(50)


def test_once_a_promotion_let_go_of_the_canary_the_route_never_goes_back_to_it():
    world = World.of(routed_spec())
    _at(world, 2, 1)
    world.instant_ready = False
    for _ in range(20):
        world.wait(30)
        world.step()
        if world.status.phase == "Promoting":
            break
    world.step()
    stable = world.deployments["stable"]
    world.deployments["stable"] = type(stable)("stable", stable.version, 10, 10, stable.serving_hash)
    world.step()
    assert world.route is not None and world.route.state == RouteState.stable_only()
    world.deployments["stable"] = type(stable)("stable", stable.version, 10, 9, stable.serving_hash)  # one unready
    world.wait(5)
    world.step()
    assert world.route.state == RouteState.stable_only() and world.status.phase == "Promoting"


def test_a_step_whose_route_was_never_set_does_not_end():
    """The shadow step's canary pod is not ready for longer than the step lasts: the step holds until the
    route has mirrored to the canary, however many runs passed meanwhile."""
    world = World.of(routed_spec())
    _at(world, 1, 0)
    world.route = RouteObservation("digits-route", RouteState.stable_only())  # not (yet) the shadow route
    world.instant_ready = False
    seen = world.deployments["canary"]
    world.deployments["canary"] = type(seen)("canary", seen.version, 1, 0, seen.serving_hash)
    for _ in range(8):  # 2 minutes of passing runs: twice the step's duration
        world.wait(15)
        world.step()
    assert (world.status.step_index, world.route.state) == (0, RouteState.stable_only())
    world.deployments["canary"] = type(seen)("canary", seen.version, 1, 1, seen.serving_hash)
    world.step()  # the pod is ready: the route mirrors now, the step still holds this pass
    assert (world.status.step_index, world.route.state) == (0, RouteState(0, None, 20))
    world.wait(15)
    world.step()
    assert world.status.step_index == 1
