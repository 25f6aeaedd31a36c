"""The canary's measured share of requests at the embedded gateway, for routes the operator writes.

Each route is the operator's own write (``manifests.routing.route_with``) over a user's HTTPRoute, for a
step's state: a weight, a header route, a mirror. The embedded gateway (``modelrelease_local.router``)
then routes a fixed number of requests, with one canary pod beside ten stable ones, so a share that
followed the pods (1/11) would show. Printed per state: the canary's share of answered requests
against the weight, with its binomial standard error and how many of those the measurement is off;
the share of mirrored copies; and for header routes, where requests with and without the header went.

Run from the repository root:  .venv/bin/python bench/router_shares.py [--requests 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from modelrelease.core.route_state import HeaderMatch, RouteState
from modelrelease.manifests.routing import route_with
from modelrelease_local.router import Router
from modelrelease_local.runner import EndpointKey

RELEASE, PORT = "digits", 8501
USER_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "digits", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "public"}],
             "rules": [{"backendRefs": [{"name": f"{RELEASE}-stable", "port": PORT}]}]},
}
ENDPOINTS = {
    EndpointKey("default", RELEASE, "stable", "v1"): list(range(9000, 9010)),  # ten stable pods
    EndpointKey("default", RELEASE, "canary", "v2"): [9100],  # one canary pod
}
HEADER = HeaderMatch("X-Canary", "always")
STATES = (
    ("weight 0 (stable only)", RouteState(0), 0.0),
    ("weight 1", RouteState(1), 0.0),
    ("weight 5, 1 canary pod of 11", RouteState(5), 0.0),
    ("weight 20", RouteState(20), 0.0),
    ("weight 50", RouteState(50), 0.0),
    ("shadow: weight 0, mirror 25%", RouteState(0, mirror_percent=25), 0.0),
    ("weight 5 + header route, 10% testers", RouteState(5, header=HEADER), 0.1),
)


@dataclass
class Measured:
    answered_by_canary: int = 0
    mirrored: int = 0
    testers: int = 0
    testers_on_canary: int = 0
    others_on_canary: int = 0


def measure(state: RouteState, tester_share: float, requests: int, rng: random.Random) -> Measured:
    router = Router(route_with(USER_ROUTE, RELEASE, None, PORT, state), ENDPOINTS)
    seen = Measured()
    for _ in range(requests):
        tester = rng.random() < tester_share
        decision = router.route({HEADER.name: HEADER.value} if tester else {}, rng)
        on_canary = decision.answer_from is not None and decision.answer_from.key.track == "canary"
        seen.answered_by_canary += on_canary
        seen.mirrored += any(m.key.track == "canary" for m in decision.mirrors)
        seen.testers += tester
        seen.testers_on_canary += tester and on_canary
        seen.others_on_canary += (not tester) and on_canary
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per state (default 20000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    table = Table(title=f"canary share at the embedded gateway, {args.requests} requests per state")
    for column in ("route state", "weight", "canary share", "std. error", "off by (SE)", "mirrored",
                   "testers on canary", "others on canary"):
        table.add_column(column, justify="left" if column == "route state" else "right")
    for name, state, tester_share in STATES:
        seen = measure(state, tester_share, args.requests, rng)
        others = args.requests - seen.testers
        expected = state.canary_weight / 100
        share = (seen.others_on_canary if state.header else seen.answered_by_canary) / max(others, 1)
        error = math.sqrt(expected * (1 - expected) / max(others, 1))
        off = f"{abs(share - expected) / error:.2f}" if error else ("0" if share == expected else "inf")
        table.add_row(name, f"{expected:.2%}", f"{share:.2%}", f"{error:.2%}", off,
                      f"{seen.mirrored / args.requests:.2%}" if state.mirror_percent else "-",
                      f"{seen.testers_on_canary}/{seen.testers}" if state.header else "-",
                      f"{seen.others_on_canary}/{others}" if state.header else "-")
    Console(width=160).print(table)
    print("canary share: of the requests without the tester header; a share that followed the pods would read "
          f"{1 / 11:.2%} on every weighted row")


if __name__ == "__main__":
    main()
