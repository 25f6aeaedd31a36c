"""The HTTPRoute of a release with traffic routing: read what it does, and make it do what the plan says.

The route is the user's object (its Gateway, hostnames and paths); the operator changes only what it
owns (``manifests.routing``). Every write replaces the whole object at the resourceVersion it was read
at, so one write sets every weight, the header rule and the mirror together (a killed operator never
leaves a half-set route), and a concurrent edit (an Argo CD sync, a person) is a conflict, read again.
"""

from __future__ import annotations

import logging

from modelrelease.adapters.kubernetes import Cluster
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.core.route_state import HeaderMatch, RouteObservation, RouteState
from modelrelease.manifests.routing import RouteProblem, confirm_written, observed_state, route_with

log = logging.getLogger(__name__)


def observe_route(cluster: Cluster, spec: ModelReleaseSpec, namespace: str, release: str) -> RouteObservation | None:
    """What the release's HTTPRoute does now; None without traffic routing."""
    routing = spec.serving.traffic_routing
    if routing is None:
        return None
    name = routing.gateway_api.http_route
    try:
        route = cluster.get_http_route(namespace, name)
    except PermissionError as denied:
        return RouteObservation(name, problem=str(denied))
    if route is None:
        return RouteObservation(name, problem=(
            f"no HTTPRoute {name} in namespace {namespace}: create it (with a rule whose backendRef is Service "
            f"{release}-stable) or fix serving.trafficRouting.gatewayAPI.httpRoute"))
    try:
        state = observed_state(route, release, routing.gateway_api.rule)
        for wanted in _states_of_steps(spec):
            # Every step's route must be writable into this route (a header rule needs the owned rules
            # to agree on their filters, the rule limits...): found now, not when the step comes.
            route_with(route, release, routing.gateway_api.rule, spec.serving.port, wanted)
    except RouteProblem as problem:
        return RouteObservation(name, problem=str(problem))
    return RouteObservation(name, state=state)


def _states_of_steps(spec: ModelReleaseSpec) -> set[RouteState]:
    """The route states the spec's steps ask for (by weight, header route and mirror)."""
    states = {RouteState.stable_only()}
    for stage in spec.stages:
        for step in stage.steps:
            header = (HeaderMatch(step.header_route.name, step.header_route.value, step.header_route.match)
                      if step.header_route else None)
            states.add(RouteState(step.weight, header, step.mirror.percent if step.mirror else None))
    return states


def set_route(cluster: Cluster, spec: ModelReleaseSpec, namespace: str, release: str, state: RouteState) -> None:
    """Write ``state`` into the release's HTTPRoute (read fresh, changed where the operator owns it)."""
    routing = spec.serving.traffic_routing
    if routing is None:
        return
    name = routing.gateway_api.http_route
    route = cluster.get_http_route(namespace, name)
    if route is None:
        raise RouteProblem(f"no HTTPRoute {name} in namespace {namespace}")
    rule = routing.gateway_api.rule
    wanted = route_with(route, release, rule, spec.serving.port, state)
    if wanted != route:
        answer = cluster.replace_http_route(namespace, name, wanted)
        try:
            confirm_written(answer, release, rule, state)
        except RouteProblem:
            # The cluster's HTTPRoute CRD dropped a field (an older Gateway API): a mirror without its
            # percent mirrors everything. Give all traffic back to the stable, then say why.
            if state != RouteState.stable_only():
                fallback = route_with(answer, release, rule, spec.serving.port, RouteState.stable_only())
                cluster.replace_http_route(namespace, name, fallback)
            raise
        log.info("HTTPRoute %s/%s: canary weight %d, header route %s, mirror %s", namespace, name,
                 state.canary_weight, "on" if state.header else "off", state.mirror_percent or "off")


def restore_route(cluster: Cluster, spec: ModelReleaseSpec, namespace: str, release: str) -> None:
    """All traffic to the stable, no header rule, no mirror: what a deleted release leaves behind.
    A route that is gone, or no longer references the release, needs nothing."""
    try:
        set_route(cluster, spec, namespace, release, RouteState.stable_only())
    except (RouteProblem, PermissionError) as problem:
        # Nothing the operator could do would change this; the deletion must not hang on it.
        log.warning("HTTPRoute of %s/%s left as it is: %s", namespace, release, problem)
