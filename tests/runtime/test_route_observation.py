"""What the runtime makes of an HTTPRoute it cannot use: a problem in words, never an exception."""

from __future__ import annotations

from typing import Any

from modelrelease.api import parse_spec
from modelrelease.runtime.route import observe_route, restore_route
from tests.core.test_planner_routing import routed_spec


class Routes:
    """Just the HTTPRoute calls of a Cluster: a fixed route, or a refusal."""

    def __init__(self, route: dict[str, Any] | None = None, denied: bool = False) -> None:
        self.route, self.denied, self.replaced = route, denied, 0

    def get_http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.denied:
            raise PermissionError(f"the operator may not read HTTPRoute {namespace}/{name} (403): install the chart "
                                  "with trafficRouting.gatewayAPI.enabled=true")
        return self.route

    def replace_http_route(self, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.replaced += 1
        return obj


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "digits-route", "namespace": "default", "resourceVersion": "1"},
            "spec": {"rules": list(rules)}}


SPEC = parse_spec(routed_spec())  # its steps have a header route and a mirror


def test_a_route_the_operator_may_not_read_is_a_problem_naming_the_grant():
    seen = observe_route(Routes(denied=True), SPEC, "default", "digits")  # type: ignore[arg-type]
    assert seen is not None and seen.state is None
    assert seen.problem is not None and "trafficRouting.gatewayAPI.enabled=true" in seen.problem


def test_a_route_that_cannot_take_a_later_steps_header_rule_is_a_problem_now():
    # Two owned rules that disagree on their timeouts: a header rule could copy neither.
    unusable = route({"matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
                      "timeouts": {"request": "30s"}, "backendRefs": [{"name": "digits-stable", "port": 8501}]},
                     {"matches": [{"path": {"type": "PathPrefix", "value": "/health"}}],
                      "backendRefs": [{"name": "digits-stable", "port": 8501}]})
    seen = observe_route(Routes(unusable), SPEC, "default", "digits")  # type: ignore[arg-type]
    assert seen is not None and seen.state is None and seen.problem


def test_deleting_a_release_whose_route_the_operator_may_not_touch_does_not_hang():
    restore_route(Routes(denied=True), SPEC, "default", "digits")  # type: ignore[arg-type]
