"""Traffic routing through a Gateway API HTTPRoute: what the route should do now, decided from status.

With ``serving.trafficRouting`` the canary's share of traffic is the step's weight exactly (the route's
backendRefs weights), not its share of pods, and a step may add a header route or a mirror. The core
decides a ``RouteState`` per pass; the runtime reads the route's current state (``RouteObservation``)
and writes the difference. Whenever the canary is on its way out (abort, rollback, a finished
promotion, deletion) the route goes to the stable first, before any canary pod is scaled down: a
failing canary stops answering users at once, and a killed operator finds the route as it left it.
"""

from __future__ import annotations

import math
from datetime import datetime

from modelrelease.api.base import parse_duration
from modelrelease.api.spec import ModelReleaseSpec, Step
from modelrelease.api.status import CANARY_WITHDRAWN_PHASES, ModelReleaseStatus
from modelrelease.core.model import Observations
from modelrelease.core.route_state import HeaderMatch, RouteObservation, RouteState
from modelrelease.core.timestamps import parse_timestamp

__all__ = ["HeaderMatch", "RouteObservation", "RouteState", "canary_pods", "desired_route"]


def current_step(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> Step | None:
    """The step the canary serves in: the current one once it started, or, while the next stage trains
    (paused or not), the last step of the stage that made this canary. None without a canary."""
    if status.canary is None or status.phase in CANARY_WITHDRAWN_PHASES or status.stage_index >= len(spec.stages):
        return None
    if status.step_started_at is not None:
        steps = spec.stages[status.stage_index].steps
        return steps[status.step_index] if status.step_index < len(steps) else None
    return spec.stages[status.stage_index - 1].steps[-1] if status.stage_index > 0 else None


def _step_routes(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> tuple[HeaderMatch | None, int | None]:
    """The header route and mirror of the step the canary serves in."""
    step = current_step(spec, status)
    if step is None or status.phase == "Promoting":
        return None, None
    header = HeaderMatch(step.header_route.name, step.header_route.value, step.header_route.match) \
        if step.header_route else None
    return header, step.mirror.percent if step.mirror else None


def promoted_stable_ready(spec: ModelReleaseSpec, status: ModelReleaseStatus, observations: Observations) -> bool:
    """Whether the stable Deployment serves the promoted canary's version on all replicas."""
    stable = observations.deployments.get("stable")
    return (status.canary is not None and stable is not None and stable.version == status.canary.id
            and stable.ready >= spec.serving.replicas)


def desired_route(spec: ModelReleaseSpec, status: ModelReleaseStatus, observations: Observations) -> RouteState | None:
    """What the route should do now; None without traffic routing."""
    if spec.serving.traffic_routing is None:
        return None
    if status.stable is None or status.canary is None or status.phase in CANARY_WITHDRAWN_PHASES:
        return RouteState.stable_only()
    if status.phase == "Promoting" and (status.route_released_at is not None
                                        or promoted_stable_ready(spec, status, observations)):
        # The stable serves the new version everywhere: take traffic off the canary, then its pods. Once
        # let go, never back: a stable pod turning unready later must not send users to a canary that
        # is going or gone.
        return RouteState.stable_only()
    header, mirror = _step_routes(spec, status)
    wanted = RouteState(status.canary_weight, header, mirror)
    seen = observations.route.state if observations.route is not None else None
    if seen is not None and _grows(seen, wanted) and not _canary_ready(spec, status, observations):
        # A Service sends only to ready pods; a route sends its share whatever stands behind it. More
        # canary traffic waits until the canary's pods for this step are ready (less never waits).
        return seen
    return wanted


def step_route_in_place(spec: ModelReleaseSpec, status: ModelReleaseStatus, observations: Observations) -> bool:
    """Whether the route does what the current step asks (always true without traffic routing). A step ends
    only once it did: a short step whose canary pods were not ready in time must not pass having never
    sent its share (or its mirror, or its header route) to the canary."""
    if spec.serving.traffic_routing is None:
        return True
    seen = observations.route.state if observations.route is not None else None
    header, mirror = _step_routes(spec, status)
    return seen == RouteState(status.canary_weight, header, mirror)


def _grows(seen: RouteState, wanted: RouteState) -> bool:
    """Whether ``wanted`` sends the canary anything ``seen`` does not."""
    return (wanted.canary_weight > seen.canary_weight or (wanted.header is not None and wanted.header != seen.header)
            or (wanted.mirror_percent or 0) > (seen.mirror_percent or 0))


def _canary_ready(spec: ModelReleaseSpec, status: ModelReleaseStatus, observations: Observations) -> bool:
    canary = observations.deployments.get("canary")
    return (status.canary is not None and canary is not None and canary.version == status.canary.id
            and canary.ready >= canary_pods(spec, status))


def canary_pods(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> int:
    """The canary's pods under traffic routing: the step's canaryScale, else serving's, else the weight's
    share; at least one whenever any request can reach the canary."""
    total = spec.serving.replicas
    step = current_step(spec, status)
    scale = step.canary_scale if step is not None and step.canary_scale is not None else spec.serving.canary_scale
    pods = scale.pods(total, status.canary_weight) if scale else math.ceil(total * status.canary_weight / 100)
    header, mirror = _step_routes(spec, status)
    reachable = status.canary_weight > 0 or header is not None or bool(mirror)
    return max(pods, 1) if reachable else pods


def route_on_stable(spec: ModelReleaseSpec, observations: Observations) -> bool:
    """Whether nothing reaches the canary through the route any more (always so without routing, and
    when the route cannot be used at all: there is nothing the operator could still take back)."""
    seen = observations.route
    if spec.serving.traffic_routing is None or seen is None or seen.state is None:
        return True
    return not seen.state.canary_reachable


def canary_may_go(spec: ModelReleaseSpec, status: ModelReleaseStatus, now: datetime) -> bool:
    """Whether the canary's pods may be scaled down: scaleDownDelay after the route let go of them."""
    routing = spec.serving.traffic_routing
    if routing is None:
        return True
    if status.route_released_at is None:
        return False
    return now >= parse_timestamp(status.route_released_at) + parse_duration(routing.scale_down_delay)


def canary_goes_at(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> datetime | None:
    """When the canary's pods may go, while that is still to come (for the requeue)."""
    routing = spec.serving.traffic_routing
    if routing is None or status.route_released_at is None:
        return None
    return parse_timestamp(status.route_released_at) + parse_duration(routing.scale_down_delay)
