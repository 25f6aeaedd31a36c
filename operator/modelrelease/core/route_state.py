"""What a route does, as data: shared by the planner's decisions and the runtime's observations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

HeaderType = Literal["Exact", "RegularExpression"]


@dataclass(frozen=True)
class HeaderMatch:
    """Requests carrying this header (value matched exactly or as a regular expression) go to the canary."""

    name: str
    value: str
    type: HeaderType = "Exact"


@dataclass(frozen=True)
class RouteState:
    """What the route does: the canary's exact share in percent, a header route, a mirror percent."""

    canary_weight: int
    header: HeaderMatch | None = None
    mirror_percent: int | None = None

    @classmethod
    def stable_only(cls) -> Self:
        """All traffic to the stable: no canary share, no header route, no mirror."""
        return cls(canary_weight=0)

    @property
    def canary_reachable(self) -> bool:
        """Whether any request (answered, header-routed or mirrored) can reach the canary."""
        return self.canary_weight > 0 or self.header is not None or bool(self.mirror_percent)


@dataclass(frozen=True)
class RouteObservation:
    """The HTTPRoute as the runtime found it this pass."""

    name: str
    state: RouteState | None = None
    """What the route does now; None when it is missing or unusable (see ``problem``)."""
    problem: str | None = None
    """Why the operator cannot route through it (missing, no rule referencing the release's Services),
    naming the route and the fix."""
