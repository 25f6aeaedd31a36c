"""
What a Gateway API implementation does with one request, given an HTTPRoute: the embedded cluster's gateway.

:class:`Router` follows the HTTPRoute specification (``gateway.networking.k8s.io/v1``):

- **rule selection**: a rule matches when any of its matches holds (path, method, every header and
  query parameter); among the matching ones precedence goes to an Exact path, then the longest
  PathPrefix, then a method match, then the most header matches, then the most query matches, then
  the first in list order. Header names compare case-insensitively; a RegularExpression must match
  the whole value. No matching rule: 404.
- **backend choice**: weighted among the rule's backendRefs (a missing weight is 1, weight 0 is
  never chosen); with no backend left (none, or all weights 0) the request fails with 500, as the
  specification asks. A chosen Service with no ready endpoint fails the request with 503.
- **mirroring**: each RequestMirror filter copies the request to its backend with probability
  ``percent``/100 or ``numerator``/``denominator`` (every request when neither is set). The copy's
  answer is discarded: it never reaches the client.

A backendRef names a Service. The embedded cluster has no kube-proxy; a release's track Services
(``<release>-stable`` and ``<release>-canary``) resolve to the ready servers of that track, as
the runner registers them (:class:`~.runner.EndpointKey`).
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from modelrelease.core.naming import track_service_name
from modelrelease_local.runner import EndpointKey

__all__ = ["Decision", "Endpoint", "Router", "mirror_probability", "referenced_services", "route_for_release",
           "service_endpoints"]

NO_RULE_MATCHED = 404
NO_BACKEND = 500
NO_READY_ENDPOINT = 503


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One ready server: which release and track it serves, and its port on 127.0.0.1."""

    key: EndpointKey
    port: int


@dataclasses.dataclass(frozen=True)
class Decision:
    """Where one request goes: the server that answers it and the servers that get a discarded copy."""

    answer_from: Endpoint | None
    mirrors: tuple[Endpoint, ...] = ()
    failure: int | None = None
    """The HTTP status the gateway itself answers with when no server does (404, 500 or 503)."""
    by_header: bool = False
    """Whether the rule was chosen for the request's headers (its match has header conditions)."""
    rule: str | None = None

    @property
    def mirror_to(self) -> Endpoint | None:
        return self.mirrors[0] if self.mirrors else None


def service_endpoints(endpoints: Mapping[EndpointKey, Sequence[int]]) -> dict[tuple[str, str], list[Endpoint]]:
    """(namespace, Service name) -> its ready endpoints, for every release track that has any."""
    services: dict[tuple[str, str], list[Endpoint]] = {}
    for key, ports in sorted(endpoints.items()):
        service = services.setdefault((key.namespace, track_service_name(key.release, key.track)), [])
        service.extend(Endpoint(key, port) for port in ports)
    return services


@dataclasses.dataclass(frozen=True)
class _Candidate:
    precedence: tuple[int, int, int, int, int]
    index: int
    rule: Mapping[str, Any]
    by_header: bool


class Router:
    """Routes requests as the HTTPRoute ``route`` says, over the ready endpoints of the Services it names."""

    def __init__(self, route: Mapping[str, Any], endpoints: Mapping[EndpointKey, Sequence[int]]) -> None:
        self.httproute = route
        self.namespace = (route.get("metadata") or {}).get("namespace") or "default"
        self.rules: list[Mapping[str, Any]] = list((route.get("spec") or {}).get("rules") or [])
        self.services = service_endpoints(endpoints)

    def route(self, request_headers: Mapping[str, str], rng: random.Random, *, path: str = "/",
                      method: str = "POST", query: Mapping[str, str] | None = None) -> Decision:
        """The decision for one request; ``rng`` makes every random choice, so a seed repeats a run."""
        candidate = self._select_rule({name.lower(): value for name, value in request_headers.items()},
                                      path, method.upper(), query or {})
        if candidate is None:
            return Decision(None, failure=NO_RULE_MATCHED)
        rule = candidate.rule
        name = rule.get("name")
        backend = self._weighted_backend(rule, rng)
        if backend is None:
            return Decision(None, failure=NO_BACKEND, by_header=candidate.by_header, rule=name)
        ready = self._endpoints_of(backend)
        if not ready:
            return Decision(None, failure=NO_READY_ENDPOINT, by_header=candidate.by_header, rule=name)
        answer_from = rng.choice(ready)
        # Copies only of requests that are forwarded: the gateway answers a failed one itself.
        mirrors = tuple(endpoint for mirror in self._mirror_filters(rule)
                        if (endpoint := self._mirrored(mirror, rng)) is not None)
        return Decision(answer_from, mirrors, None, candidate.by_header, name)

    # Rule selection.

    def _select_rule(self, headers: Mapping[str, str], path: str, method: str,
                     query: Mapping[str, str]) -> _Candidate | None:
        best: _Candidate | None = None
        for index, rule in enumerate(self.rules):
            for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
                if not _matches(match, headers, path, method, query):
                    continue
                candidate = _Candidate(_precedence(match), index, rule, bool(match.get("headers")))
                # Strictly greater only: on a tie the first rule in list order keeps precedence.
                if best is None or candidate.precedence > best.precedence:
                    best = candidate
        return best

    # Backends.

    def _weighted_backend(self, rule: Mapping[str, Any], rng: random.Random) -> Mapping[str, Any] | None:
        weighted = [(ref, int(ref.get("weight", 1))) for ref in rule.get("backendRefs") or []]
        weighted = [(ref, weight) for ref, weight in weighted if weight > 0]
        if not weighted:
            return None
        refs, weights = zip(*weighted, strict=True)
        return rng.choices(refs, weights=weights)[0]

    def _endpoints_of(self, ref: Mapping[str, Any]) -> list[Endpoint]:
        if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
            return []  # only core Services resolve to servers here
        return self.services.get((ref.get("namespace") or self.namespace, ref.get("name", "")), [])

    # Mirrors.

    @staticmethod
    def _mirror_filters(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [f.get("requestMirror") or {} for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"]

    def _mirrored(self, mirror: Mapping[str, Any], rng: random.Random) -> Endpoint | None:
        # Draw for every mirror filter, mirrored or not, so one filter's outcome does not shift another's.
        draw = rng.random()
        if draw >= mirror_probability(mirror):
            return None
        ready = self._endpoints_of(mirror.get("backendRef") or {})
        return rng.choice(ready) if ready else None


def mirror_probability(mirror: Mapping[str, Any]) -> float:
    """The share of requests a RequestMirror filter copies: percent, or the fraction, or all of them."""
    if mirror.get("percent") is not None:
        return int(mirror["percent"]) / 100
    fraction = mirror.get("fraction")
    if fraction is not None:
        return int(fraction.get("numerator", 0)) / int(fraction.get("denominator", 100))
    return 1.0


def _matches(match: Mapping[str, Any], headers: Mapping[str, str], path: str, method: str,
             query: Mapping[str, str]) -> bool:
    path_match = match.get("path") or {"type": "PathPrefix", "value": "/"}
    if not _path_matches(path_match.get("type", "PathPrefix"), path_match.get("value", "/"), path):
        return False
    if match.get("method") and match["method"] != method:
        return False
    for condition in match.get("headers") or []:
        if not _value_matches(condition, headers.get(str(condition["name"]).lower())):
            return False
    return all(_value_matches(condition, query.get(condition["name"])) for condition in match.get("queryParams") or [])


def _value_matches(condition: Mapping[str, Any], value: str | None) -> bool:
    if value is None:
        return False
    if condition.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(condition["value"], value) is not None
    return bool(value == condition["value"])


def _path_matches(kind: str, expected: str, path: str) -> bool:
    if kind == "Exact":
        return path == expected
    if kind == "RegularExpression":
        return re.fullmatch(expected, path) is not None
    # PathPrefix matches whole path elements: "/v1" matches "/v1" and "/v1/x", not "/v10".
    prefix = expected.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _precedence(match: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind = path.get("type", "PathPrefix")
    exact = 1 if kind == "Exact" else 0
    prefix_length = len(path.get("value", "/")) if kind in ("Exact", "PathPrefix") else 0
    return (exact, prefix_length, 1 if match.get("method") else 0, len(match.get("headers") or []),
            len(match.get("queryParams") or []))


def referenced_services(route: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(namespace, name) of every Service the route sends to or mirrors to."""
    namespace = (route.get("metadata") or {}).get("namespace") or "default"
    refs: list[Mapping[str, Any]] = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs.extend(rule.get("backendRefs") or [])
        refs.extend((f.get("requestMirror") or {}).get("backendRef") or {}
                    for f in rule.get("filters") or [] if f.get("type") == "RequestMirror")
    return {(ref.get("namespace") or namespace, ref.get("name", "")) for ref in refs
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"}


def route_for_release(routes: Sequence[Mapping[str, Any]], namespace: str, release: str) -> Mapping[str, Any] | None:
    """The HTTPRoute that sends to one of the release's track Services; with several, the oldest (then
    the first by name), the route the Gateway API gives precedence to."""
    tracks = {(namespace, track_service_name(release, track)) for track in ("stable", "canary")}
    found = [route for route in routes if route.get("metadata", {}).get("deletionTimestamp") is None
             and referenced_services(route) & tracks]
    found.sort(key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"].get("namespace") or "",
                              r["metadata"].get("name") or ""))
    return found[0] if found else None
