"""
A load generator: real predict requests through the "Service" of each release, and feedback.

A Kubernetes Service spreads connections over its ready endpoints evenly, so each track gets a
share in proportion to its ready replicas. :class:`TrafficGenerator` does the same per request:
it picks one port uniformly among every ready endpoint of a release (both tracks together).

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
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from modelrelease_local.runner import EndpointKey

__all__ = ["TrafficGenerator", "TrafficStats", "digits_samples", "pick_endpoint"]

logger = logging.getLogger(__name__)
EndpointSource = Callable[[], Mapping[EndpointKey, list[int]]]


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
    """Counts per (release, track): requests sent, answered 200, errors, feedback posted."""

    requests: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    ok: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    errors: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    feedback: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def count(self, table: dict[tuple[str, str], int], key: EndpointKey) -> None:
        index = (key.release, key.track)
        table[index] = table.get(index, 0) + 1


class TrafficGenerator:
    """A thread that sends ``rate`` predicts per second to each release it finds in the endpoints."""

    def __init__(self, endpoints: EndpointSource, *, rate: float = 20.0, feedback_share: float = 0.5,
                 namespace: str | None = None, release: str | None = None, seed: int = 0,
                 timeout: float = 5.0) -> None:
        if rate <= 0 or not 0 <= feedback_share <= 1:
            raise ValueError("rate must be > 0 and feedback_share in [0, 1]")
        self.endpoints = endpoints
        self.rate = rate
        self.feedback_share = feedback_share
        self.namespace = namespace
        self.release = release
        self.timeout = timeout
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

    def _releases(self) -> dict[tuple[str, str], dict[EndpointKey, list[int]]]:
        grouped: dict[tuple[str, str], dict[EndpointKey, list[int]]] = {}
        for key, ports in self.endpoints().items():
            if self.namespace not in (None, key.namespace) or self.release not in (None, key.release):
                continue
            grouped.setdefault((key.namespace, key.release), {})[key] = list(ports)
        return grouped

    def _loop(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            releases = self._releases()
            self._close_unused({port for endpoints in releases.values() for ports in endpoints.values()
                                for port in ports})
            for endpoints in releases.values():
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
        index = self._rng.randrange(len(self._labels))
        self.stats.count(self.stats.requests, key)
        status, body = self._post(port, f"/v1/models/{key.model}:predict",
                                  {"instances": [self._images[index].tolist()]})
        if status != 200 or body is None:
            self.stats.count(self.stats.errors, key)
            return status
        self.stats.count(self.stats.ok, key)
        if self._rng.random() < self.feedback_share and isinstance(body.get("requestId"), str):
            feedback = {"requestId": body["requestId"], "labels": [int(self._labels[index])]}
            if self._post(port, f"/v1/models/{key.model}:feedback", feedback)[0] == 200:
                self.stats.count(self.stats.feedback, key)
        return status

    def _post(self, port: int, path: str, payload: dict[str, Any]) -> tuple[int | None, dict[str, Any] | None]:
        data = json.dumps(payload).encode()
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more afresh
            connection = self._connections.get(port)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
                self._connections[port] = connection
            try:
                connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
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
