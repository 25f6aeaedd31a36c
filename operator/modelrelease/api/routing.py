"""Traffic routing fields of a ModelRelease: a Gateway API HTTPRoute, canary scale, header and mirror routes.

Without ``serving.trafficRouting`` the canary's traffic share is its share of pods (one Service over
both tracks). With it, an HTTPRoute carries the step's weight exactly, the stable keeps full scale, and
the canary has as many pods as ``canaryScale`` says. The route itself is the user's (it names the
Gateway, hostnames and paths); the operator owns the backendRefs of its rules that reference the
release's Services, its own header rule, and its own mirror filter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from modelrelease.api.base import Duration, WireModel

if TYPE_CHECKING:  # only for annotations: spec.py imports this module
    from modelrelease.api.spec import ModelReleaseSpec

# The Gateway API's HTTPHeaderName: an RFC 7230 token.
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class GatewayAPIRouting(WireModel):
    http_route: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)]
    """Name of an HTTPRoute (gateway.networking.k8s.io/v1) in the release's namespace. It must exist and
    have a rule with a backendRef to Service <release>-stable (the operator adds <release>-canary)."""
    rule: Annotated[str, Field(min_length=1, max_length=253, pattern=_NAME)] | None = None
    """Name of the rule (rules[].name) whose backendRefs the operator sets; default every rule with a
    backendRef to Service <release>-stable or <release>-canary."""


class TrafficRouting(WireModel):
    gateway_api: GatewayAPIRouting = Field(alias="gatewayAPI")
    """Route through a Gateway API HTTPRoute."""
    scale_down_delay: Duration = "30s"
    """How long the canary's pods keep running after the route took all traffic off them (on rollback,
    abort, promotion), so the Gateway has applied the change and requests in flight finish; a Go
    duration. Default 30s."""


class CanaryScale(WireModel):
    """How many canary pods serve, apart from the traffic weight. Exactly one field."""

    replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    """This many canary pods, 0 to 1000."""
    percent: Annotated[int, Field(ge=0, le=100)] | None = None
    """This percentage of serving.replicas, rounded up, 0 to 100."""
    match_traffic_weight: bool | None = Field(default=None, alias="matchTrafficWeight")
    """As many pods as the step's weight of serving.replicas, rounded up (the default)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryScale:
        chosen = [f for f in ("replicas", "percent", "match_traffic_weight") if getattr(self, f) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of replicas, percent or matchTrafficWeight")
        if self.match_traffic_weight is False:
            raise ValueError("matchTrafficWeight can only be true; set replicas or percent instead")
        return self

    def pods(self, total: int, weight: int) -> int:
        """Canary pods for ``total`` serving replicas at ``weight``."""
        if self.replicas is not None:
            return self.replicas
        share = self.percent if self.percent is not None else weight
        return math.ceil(total * share / 100)


class HeaderRoute(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME)]
    """HTTP header name (an RFC 7230 token, matched case-insensitively), e.g. X-Canary."""
    value: Annotated[str, Field(min_length=1, max_length=4096)]
    """The value that sends a request to the canary."""
    match: Literal["Exact", "RegularExpression"] = "Exact"
    """Exact (default) or RegularExpression (as the Gateway implementation reads regular expressions)."""


class MirrorRoute(WireModel):
    percent: Annotated[int, Field(ge=1, le=100)]
    """Share of the requests copied to the canary, 1 to 100; the copies' responses are discarded."""


def routing_problems(spec: ModelReleaseSpec) -> list[str]:
    """What the spec's routing fields cannot mean together, each naming the field and the fix."""
    routed = spec.serving.traffic_routing is not None
    problems = []
    fields: list[tuple[str, object]] = [("serving.canaryScale", spec.serving.canary_scale)]
    for stage in spec.stages:
        for index, step in enumerate(stage.steps):
            where = f"stages[{stage.name}].steps[{index}]"
            fields += [(f"{where}.canaryScale", step.canary_scale), (f"{where}.headerRoute", step.header_route),
                       (f"{where}.mirror", step.mirror)]
            if routed and step.weight == 100 and (step.header_route or step.mirror):
                problems.append(f"{where}: at weight 100 every request goes to the canary; a headerRoute or "
                                "mirror there means nothing: remove it or lower the weight")
            if routed and step.weight < 100 and step.canary_scale is not None and step.canary_scale.replicas == 0 \
                    and (step.weight > 0 or step.header_route or step.mirror):
                problems.append(f"{where}.canaryScale: 0 canary pods cannot take traffic; give at least 1")
    if not routed:
        problems += [f"{name} needs serving.trafficRouting: without a route the canary's traffic share is its "
                     "share of pods; set serving.trafficRouting.gatewayAPI.httpRoute or remove the field"
                     for name, value in fields if value is not None]
    return problems
