"""The HTTPRoute as the operator reads and writes it: which rules are its own, what they do now, and
the same route set to a ``RouteState``. Pure: objects in, objects out.

The user owns the HTTPRoute (parents, hostnames, the rules' matches and filters); the operator owns, in
the rules that send traffic to the release:
- their ``backendRefs``: exactly Service ``<release>-stable`` (weight 100 - w) and ``<release>-canary``
  (weight w), so the canary's share is the step's weight exactly; a weight-0 reference stays;
- one ``RequestMirror`` filter to ``<release>-canary`` with ``percent`` (other filters are kept);
- one rule of its own, ``<release>-canary-header``, placed before them: their matches, each with the
  step's header match added, sent to the canary only. Gateway API ranks a match with more header
  matches above the same match with fewer, so header requests take this rule whatever its position.

Written objects follow HTTPRoute ``gateway.networking.k8s.io/v1``. Two of the fields used are newer than
v1 itself: ``rules[].name`` (the header rule's identity, and ``gatewayAPI.rule``) is in the standard
channel from Gateway API v1.4 (experimental from v1.2), and ``RequestMirror.percent`` in the standard
channel from v1.3 (experimental from v1.2). On an older CRD the API server silently drops them, which
``confirm_written`` detects. The limits checked are the CRD's: 16 rules, 64 matches per rule and 128 in
the route, 16 header matches per match, 16 filters per rule, mirror percent 0..100.

What the operator writes is in the API server's defaulted form (``group: ""``, ``kind: Service``, a
match's path ``PathPrefix /``, a header's ``type``), so a route read back compares equal to what was
written and ``in_sync`` does not ask for a write every pass.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from modelrelease.core.naming import track_service_name
from modelrelease.core.route_state import HeaderMatch, RouteState

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
HTTP_ROUTE_API_VERSION = f"{GATEWAY_GROUP}/{GATEWAY_VERSION}"
HTTP_ROUTES = "httproutes"

MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES_PER_ROUTE = 128
MAX_HEADERS_PER_MATCH = 16
MAX_FILTERS_PER_RULE = 16
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
DEFAULT_PATH = {"type": "PathPrefix", "value": "/"}
MIRROR = "RequestMirror"
TRACKS = ("stable", "canary")


class RouteProblem(ValueError):
    """The HTTPRoute cannot carry the release's traffic as it is; the message names it and the fix."""


def header_rule_name(release: str) -> str:
    """The name of the one rule the operator adds to the route (header routing to the canary)."""
    return f"{release}-canary-header"


def _where(route: dict[str, Any]) -> str:
    meta = route.get("metadata") or {}
    return f"HTTPRoute {meta.get('namespace', '')}/{meta.get('name', '')}"


def _rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    return list((route.get("spec") or {}).get("rules") or [])


def _is_release_ref(ref: dict[str, Any], route: dict[str, Any], release: str, track: str | None = None) -> bool:
    """Whether a backendRef (or a mirror's backendRef) is one of the release's track Services."""
    if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
        return False
    namespace = ref.get("namespace")
    if namespace is not None and namespace != (route.get("metadata") or {}).get("namespace"):
        return False
    names = [track_service_name(release, track)] if track else [track_service_name(release, t) for t in TRACKS]
    return ref.get("name") in names


def _is_our_mirror(filter_: dict[str, Any], route: dict[str, Any], release: str) -> bool:
    mirror = filter_.get("requestMirror") or {}
    return filter_.get("type") == MIRROR and _is_release_ref(mirror.get("backendRef") or {}, route, release, "canary")


def owned_rules(route: dict[str, Any], release: str, rule: str | None) -> list[int]:
    """Indexes of the rules whose traffic the operator splits: the rule named ``rule``, or else every rule
    with a backendRef to ``<release>-stable`` or ``<release>-canary``. Never the operator's header rule."""
    rules = _rules(route)
    ours = header_rule_name(release)
    if rule is not None:
        found = [i for i, r in enumerate(rules) if r.get("name") == rule and rule != ours]
        if not found:
            named = [r["name"] for r in rules if r.get("name") and r.get("name") != ours]
            raise RouteProblem(
                f"{_where(route)} has no rule named {rule!r} (named rules: {', '.join(named) or 'none'}); "
                f"name the rule (spec.rules[].name, Gateway API v1.4+) or correct "
                f"spec.serving.trafficRouting.gatewayAPI.rule, or leave it out to use every rule that "
                f"references Service {track_service_name(release, 'stable')}")
        return found
    found = [i for i, r in enumerate(rules) if r.get("name") != ours
             and any(_is_release_ref(ref, route, release) for ref in r.get("backendRefs") or [])]
    if not found:
        stable = track_service_name(release, "stable")
        raise RouteProblem(
            f"{_where(route)} has no rule that sends traffic to Service {stable}; add one, e.g. "
            f"`rules: [{{backendRefs: [{{name: {stable}, port: <serving port>}}]}}]`, or name an existing "
            f"rule in spec.serving.trafficRouting.gatewayAPI.rule")
    return found


def _percent_of(part: int, whole: int) -> int:
    """``part`` of ``whole`` in whole percent, rounded half up; a share that is not zero (or not all)
    never reads as 0 (or 100), so traffic that reaches the canary is never taken for none."""
    if whole <= 0 or part <= 0:
        return 0
    if part >= whole:
        return 100
    return min(99, max(1, (200 * part + whole) // (2 * whole)))


def _canary_share(rule: dict[str, Any], route: dict[str, Any], release: str) -> int:
    refs = rule.get("backendRefs") or []
    weights = [int(ref.get("weight", 1)) for ref in refs]
    canary = sum(w for ref, w in zip(refs, weights, strict=True) if _is_release_ref(ref, route, release, "canary"))
    return _percent_of(canary, sum(weights))


def _mirror_percent(filter_: dict[str, Any]) -> int:
    """A RequestMirror filter's share: percent, else fraction, else everything (the field's default)."""
    mirror = filter_.get("requestMirror") or {}
    if "percent" in mirror:
        return int(mirror["percent"])
    fraction = mirror.get("fraction")
    if fraction:
        return _percent_of(int(fraction.get("numerator", 0)), int(fraction.get("denominator", 100)))
    return 100


def _unreadable_header() -> HeaderMatch:
    # A header rule the operator did not write this way: it still reaches the canary, so it must never
    # read as absent (that would leave it in place); an empty name matches no step's header route.
    return HeaderMatch(name="", value="")


def _observed_header(route: dict[str, Any], release: str) -> HeaderMatch | None:
    rule = next((r for r in _rules(route) if r.get("name") == header_rule_name(release)), None)
    if rule is None:
        return None
    ours = [(match.get("headers") or [None])[-1] for match in rule.get("matches") or [{}]]
    if not ours or any(h is None for h in ours) or any(h != ours[0] for h in ours):
        return _unreadable_header()
    header = ours[0]
    kind = header.get("type", "Exact")
    if kind not in ("Exact", "RegularExpression"):
        return _unreadable_header()
    return HeaderMatch(name=str(header.get("name", "")), value=str(header.get("value", "")), type=kind)


def observed_state(route: dict[str, Any], release: str, rule: str | None) -> RouteState:
    """What the route does now for the release. Owned rules that disagree report the largest canary share
    and mirror, so a route left half-written is never taken for one that spares the canary."""
    rules = _rules(route)
    owned = [rules[i] for i in owned_rules(route, release, rule)]
    weight = max(_canary_share(r, route, release) for r in owned)
    mirrors = [_mirror_percent(f) for r in owned for f in r.get("filters") or [] if _is_our_mirror(f, route, release)]
    return RouteState(canary_weight=weight, header=_observed_header(route, release),
                      mirror_percent=max(mirrors) if mirrors else None)


def _service_ref(release: str, track: str, port: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": track_service_name(release, track), "port": port}


def _defaulted_match(match: dict[str, Any]) -> dict[str, Any]:
    """A copy of a match in the form the API server stores it (its defaults filled in)."""
    out = copy.deepcopy(match)
    out["path"] = {**DEFAULT_PATH, **(out.get("path") or {})}
    for field in ("headers", "queryParams"):
        if field in out:
            out[field] = [{"type": "Exact", **item} for item in out[field]]
    return out


def _with_header(match: dict[str, Any], header: HeaderMatch) -> dict[str, Any]:
    out = _defaulted_match(match)
    # Header names are case-insensitive and unique within a match: the step's header replaces the user's.
    kept = [h for h in out.get("headers") or [] if str(h.get("name", "")).lower() != header.name.lower()]
    out["headers"] = [*kept, {"type": header.type, "name": header.name, "value": header.value}]
    return out


def _rule_extras(rule: dict[str, Any], route: dict[str, Any], release: str) -> dict[str, Any]:
    """What a header-routed request must keep of its rule: filters (less the mirror), timeouts, ..."""
    extras = {k: copy.deepcopy(v) for k, v in rule.items() if k not in ("name", "matches", "backendRefs", "filters")}
    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, route, release)]
    if filters:
        extras["filters"] = copy.deepcopy(filters)
    return extras


def _header_rule(route: dict[str, Any], owned: Sequence[dict[str, Any]], release: str, port: int,
                 header: HeaderMatch) -> dict[str, Any]:
    if not HEADER_NAME.match(header.name) or not header.value:
        raise RouteProblem(f"{_where(route)}: header route {header.name!r}={header.value!r} is not a valid "
                           f"HTTP header match; use a header name of letters, digits and -_. and a non-empty value")
    extras = [_rule_extras(r, route, release) for r in owned]
    if any(e != extras[0] for e in extras):
        raise RouteProblem(f"{_where(route)}: the rules sending traffic to {track_service_name(release, 'stable')} "
                           f"have different filters or timeouts, so one header rule cannot stand for them all; "
                           f"name one of them in spec.serving.trafficRouting.gatewayAPI.rule")
    matches = [_with_header(m, header) for r in owned for m in (r.get("matches") or [{}])]
    if len(matches) > MAX_MATCHES_PER_RULE:
        raise RouteProblem(f"{_where(route)}: the header rule would need {len(matches)} matches (at most "
                           f"{MAX_MATCHES_PER_RULE}); name one rule in spec.serving.trafficRouting.gatewayAPI.rule")
    if any(len(m["headers"]) > MAX_HEADERS_PER_MATCH for m in matches):
        raise RouteProblem(f"{_where(route)}: a match already has {MAX_HEADERS_PER_MATCH} header matches, the "
                           f"most Gateway API allows, so the header route cannot be added; remove one there")
    return {"name": header_rule_name(release), "matches": matches, **extras[0],
            "backendRefs": [{**_service_ref(release, "canary", port), "weight": 100}]}


def _set_rule(rule: dict[str, Any], route: dict[str, Any], release: str, port: int, state: RouteState) -> None:
    rule["backendRefs"] = [{**_service_ref(release, "stable", port), "weight": 100 - state.canary_weight},
                           {**_service_ref(release, "canary", port), "weight": state.canary_weight}]
    filters = [f for f in rule.get("filters") or [] if not _is_our_mirror(f, route, release)]
    if state.mirror_percent is not None:
        filters.append({"type": MIRROR, "requestMirror": {"backendRef": _service_ref(release, "canary", port),
                                                          "percent": state.mirror_percent}})
    if len(filters) > MAX_FILTERS_PER_RULE:
        raise RouteProblem(f"{_where(route)}: a rule already has {MAX_FILTERS_PER_RULE} filters, the most Gateway "
                           f"API allows, so the mirror cannot be added; remove a filter there")
    # No filters and an empty list mean the same; leaving none keeps every way back to a state one route.
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)


def _check_state(route: dict[str, Any], state: RouteState) -> None:
    if not 0 <= state.canary_weight <= 100:
        raise RouteProblem(f"{_where(route)}: canary weight {state.canary_weight} is not a percentage (0..100)")
    if state.mirror_percent is not None and not 1 <= state.mirror_percent <= 100:
        raise RouteProblem(f"{_where(route)}: mirror percent {state.mirror_percent} is outside 1..100; set the "
                           f"step's mirror.percent between 1 and 100, or leave mirror out")


def route_with(route: dict[str, Any], release: str, rule: str | None, port: int, state: RouteState) -> dict[str, Any]:
    """A copy of the HTTPRoute that does ``state`` for the release; nothing the operator does not own changes."""
    _check_state(route, state)
    out = copy.deepcopy(route)
    spec = out.setdefault("spec", {})
    ours = header_rule_name(release)
    rules = [r for r in spec.get("rules") or [] if r.get("name") != ours]
    spec["rules"] = rules
    indexes = owned_rules(out, release, rule)
    for i in indexes:
        _set_rule(rules[i], out, release, port, state)
    if state.header is not None:
        rules.insert(indexes[0], _header_rule(out, [rules[i] for i in indexes], release, port, state.header))
    if len(rules) > MAX_RULES:
        raise RouteProblem(f"{_where(route)} would have {len(rules)} rules with the header route, more than the "
                           f"{MAX_RULES} Gateway API allows; merge rules there or drop the step's headerRoute")
    total = sum(len(r.get("matches") or [{}]) for r in rules)
    if total > MAX_MATCHES_PER_ROUTE:
        raise RouteProblem(f"{_where(route)} would have {total} matches with the header route, more than the "
                           f"{MAX_MATCHES_PER_ROUTE} Gateway API allows in one route; name one rule in "
                           f"spec.serving.trafficRouting.gatewayAPI.rule or drop the step's headerRoute")
    return out


def in_sync(route: dict[str, Any], release: str, rule: str | None, port: int, state: RouteState) -> bool:
    """Whether the route already is exactly what ``route_with`` would write (every owned rule, not only
    the largest share ``observed_state`` reports): no write needed."""
    return route_with(route, release, rule, port, state) == route


def confirm_written(answer: dict[str, Any], release: str, rule: str | None, state: RouteState) -> None:
    """Raise a RouteProblem when the API server's answer to a write does not do ``state``: its HTTPRoute
    CRD dropped a field it does not know (an older Gateway API), which would otherwise go unseen."""
    kept = observed_state(answer, release, rule)
    if kept == state:
        return
    lost = []
    if state.header is not None and kept.header is None:
        lost.append("rules[].name (the header rule's name; standard channel from Gateway API v1.4)")
    if state.mirror_percent is not None and kept.mirror_percent != state.mirror_percent:
        lost.append("RequestMirror percent (standard channel from Gateway API v1.3)")
    what = "; ".join(lost) or f"the route state {state} (it reads back as {kept})"
    raise RouteProblem(f"{_where(answer)} did not keep what the operator wrote: {what}. Install the Gateway API "
                       f"CRDs v1.4 or later (standard channel), or v1.2 or later (experimental channel)")
