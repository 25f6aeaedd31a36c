"""
A load generator: real predict requests through the "Service" of each release, and feedback.

A Kubernetes Service spreads connections over its ready endpoints evenly, so each track gets a
share in proportion to its ready replicas. :class:`TrafficGenerator` does the same per request:
it picks one port uniformly among every ready endpoint of a release (both tracks together).

A release with an HTTPRoute (one whose rules send to ``<release>-stable`` or ``<release>-canary``)
is reached through that route instead, as a Gateway would route it (:class:`~.router.Router`):
exact weights, header routes, mirrors whose answers are dropped. The routes are re-read at most
every ``route_refresh`` seconds, so a changed weight is followed within about a second. A share
of requests (``tester_share``, none by default) carries the tester header ``X-Canary: always``.

Requests carry digits images of the trainer's held-out evaluation split (seed 0, 20%, the
trainer's defaults), as raw features: the model rescales inside. For a share of the answered
predictions the generator posts the true labels as feedback, so that online accuracy exists
for both tracks.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from modelrelease_local.router import Endpoint, Router, route_for_release
from modelrelease_local.runner import EndpointKey

__all__ = ["Exchange", "RouteCache", "TrafficGenerator", "TrafficStats", "digits_samples", "pick_endpoint"]

logger = logging.getLogger(__name__)
EndpointSource = Callable[[], Mapping[EndpointKey, list[int]]]
RouteSource = Callable[[], Sequence[Mapping[str, Any]]]
TESTER_HEADER = ("X-Canary", "always")


def digits_samples(seed: int = 0, eval_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The digits images the trainer holds out for evaluation, as it splits them (features, labels)."""
    from sklearn.datasets import load_digits

    from modelrelease_trainer.data import Dataset, split_dataset

    bunch = load_digits()
    dataset = Dataset(x=np.asarray(bunch.data, dtype=np.float32), y=np.asarray(bunch.target, dtype=np.int64))
    split = split_dataset(dataset, seed=seed, eval_fraction=eval_fraction)
    return split.x_eval, split.y_eval


def pick_endpoint(endpoints: Mapping[EndpointKey, list[int]], rng: random.Random) -> tuple[EndpointKey, int] | None:
    """One ready endpoint, uniformly among all of them: a track's share follows its ready replicas."""
    choices = [(key, port) for key, ports in sorted(endpoints.items()) for port in ports]
    return rng.choice(choices) if choices else None


@dataclasses.dataclass
class TrafficStats:
    """Counts per (release, track): requests sent, answered 200, errors, feedback posted; through an
    HTTPRoute also the copies mirrored to a track, the requests a header route sent to a track, and
    per (release, HTTP status) the requests the route itself failed (404 no rule, 500 no backend,
    503 no ready endpoint)."""

    requests: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    ok: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    errors: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    feedback: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    mirrored: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    header_routed: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    route_failures: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def count(self, table: dict[tuple[str, str], int], key: EndpointKey) -> None:
        index = (key.release, key.track)
        table[index] = table.get(index, 0) + 1

    def count_failure(self, release: str, status: int) -> None:
        index = (release, str(status))
        self.route_failures[index] = self.route_failures.get(index, 0) + 1


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One request as its client saw it: the answer's status and body, and which server gave it."""

    status: int | None
    body: dict[str, Any] | None
    answered_by: EndpointKey | None
    mirrored_to: tuple[EndpointKey, ...] = ()


class RouteCache:
    """The HTTPRoutes, read again at most every ``refresh`` seconds; a failed read keeps the last ones."""

    def __init__(self, source: RouteSource, refresh: float = 1.0) -> None:
        self.source = source
        self.refresh = refresh
        self._routes: list[Mapping[str, Any]] = []
        self._read_at: float | None = None

    def routes(self) -> list[Mapping[str, Any]]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.refresh:
            self._read_at = now
            try:
                self._routes = list(self.source())
            except Exception as exc:  # the API restarting, the CRD not installed yet: route as before
                logger.debug("could not read the HTTPRoutes: %s", exc)
        return self._routes

    def for_release(self, namespace: str, release: str) -> Mapping[str, Any] | None:
        return route_for_release(self.routes(), namespace, release)


class TrafficGenerator:
    """A thread that sends ``rate`` predicts per second to each release it finds in the endpoints."""

    def __init__(self, endpoints: EndpointSource, *, rate: float = 20.0, feedback_share: float = 0.5,
                 namespace: str | None = None, release: str | None = None, seed: int = 0,
                 timeout: float = 5.0, routes: RouteSource | None = None, route_refresh: float = 1.0,
                 tester_share: float = 0.0, tester_header: tuple[str, str] = TESTER_HEADER) -> None:
        if rate <= 0 or not 0 <= feedback_share <= 1 or not 0 <= tester_share <= 1:
            raise ValueError("rate must be > 0, and feedback_share and tester_share in [0, 1]")
        self.endpoints = endpoints
        self.rate = rate
        self.feedback_share = feedback_share
        self.namespace = namespace
        self.release = release
        self.timeout = timeout
        self.routes = RouteCache(routes, route_refresh) if routes is not None else None
        self.tester_share = tester_share
        self.tester_header = tester_header
        self.stats = TrafficStats()
        self._rng = random.Random(seed)
        self._images, self._labels = digits_samples()
        self._connections: dict[int, http.client.HTTPConnection] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TrafficGenerator:
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> TrafficGenerator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _releases(self, everywhere: Mapping[EndpointKey, list[int]]
                  ) -> dict[tuple[str, str], dict[EndpointKey, list[int]]]:
        grouped: dict[tuple[str, str], dict[EndpointKey, list[int]]] = {}
        for key, ports in everywhere.items():
            if self.namespace not in (None, key.namespace) or self.release not in (None, key.release):
                continue
            grouped.setdefault((key.namespace, key.release), {})[key] = list(ports)
        return grouped

    def _loop(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            everywhere = dict(self.endpoints())
            # Mirrors may go to any ready server, so connections follow every endpoint.
            self._close_unused({port for ports in everywhere.values() for port in ports})
            for (namespace, release), endpoints in self._releases(everywhere).items():
                route = self.routes.for_release(namespace, release) if self.routes is not None else None
                if route is not None:
                    self.send_routed(route, everywhere, namespace, release)
                    continue
                picked = pick_endpoint(endpoints, self._rng)
                if picked is not None:
                    self.send_one(*picked)
            next_at += period
            # Behind schedule (a slow answer): start afresh instead of bursting to catch up.
            next_at = max(next_at, time.monotonic() - period)
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _close_unused(self, ports: set[int]) -> None:
        for port in [p for p in self._connections if p not in ports]:
            self._connections.pop(port).close()

    def send_one(self, key: EndpointKey, port: int) -> int | None:
        """One predict (and maybe its feedback); the HTTP status, or None when it got no answer."""
        return self._exchange(key, port).status

    def send_routed(self, route: Mapping[str, Any], endpoints: Mapping[EndpointKey, list[int]], namespace: str,
                    release: str) -> Exchange:
        """One predict through the release's HTTPRoute (maybe with the tester header), its mirrored
        copies (their answers dropped), and maybe its feedback to the server that answered."""
        models = sorted({key.model for key in endpoints if (key.namespace, key.release) == (namespace, release)})
        path = f"/v1/models/{models[0] if models else release}:predict"
        headers = dict([self.tester_header]) if self.tester_share and self._rng.random() < self.tester_share else {}
        decision = Router(route, endpoints).route(headers, self._rng, path=path, method="POST")
        if decision.answer_from is None:
            self.stats.count_failure(release, decision.failure or 500)
            return Exchange(decision.failure, None, None)
        answering = decision.answer_from.key
        if decision.by_header:
            self.stats.count(self.stats.header_routed, answering)
        return self._exchange(answering, decision.answer_from.port, headers=headers, mirrors=decision.mirrors)

    def _exchange(self, key: EndpointKey, port: int, *, headers: Mapping[str, str] | None = None,
                  mirrors: Sequence[Endpoint] = ()) -> Exchange:
        index = self._rng.randrange(len(self._labels))
        predict = f"/v1/models/{key.model}:predict"
        payload = {"instances": [self._images[index].tolist()]}
        self.stats.count(self.stats.requests, key)
        status, body = self._post(port, predict, payload, headers)
        for mirror in mirrors:
            # A copy of the same request; what it answers is dropped, as a gateway drops it.
            self._post(mirror.port, predict, payload, headers)
            self.stats.count(self.stats.mirrored, mirror.key)
        mirrored_to = tuple(mirror.key for mirror in mirrors)
        if status != 200 or body is None:
            self.stats.count(self.stats.errors, key)
            return Exchange(status, body, key, mirrored_to)
        self.stats.count(self.stats.ok, key)
        if self._rng.random() < self.feedback_share and isinstance(body.get("requestId"), str):
            feedback = {"requestId": body["requestId"], "labels": [int(self._labels[index])]}
            if self._post(port, f"/v1/models/{key.model}:feedback", feedback)[0] == 200:
                self.stats.count(self.stats.feedback, key)
        return Exchange(status, body, key, mirrored_to)

    def _post(self, port: int, path: str, payload: dict[str, Any],
              headers: Mapping[str, str] | None = None) -> tuple[int | None, dict[str, Any] | None]:
        data = json.dumps(payload).encode()
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more afresh
            connection = self._connections.get(port)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
                self._connections[port] = connection
            try:
                connection.request("POST", path, body=data,
                                   headers={**(headers or {}), "Content-Type": "application/json"})
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connections.pop(port, None)
                if attempt:
                    return None, None
                continue
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            return response.status, body if isinstance(body, dict) else None
        return None, None
