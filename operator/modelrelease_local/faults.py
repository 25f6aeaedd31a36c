"""
Faults the embedded API server injects: armed one by one (``server.fail_next``) or declared as a plan
(``EmbeddedApiServer(faults=plan)``, ``server.faults.load(plan)``, ``--faults FILE``).

A plan is a mapping (YAML or JSON in a file)::

    seed: 7                      # the random generator behind `probability`: runs repeat exactly
    faults:
      - {kind: error, status: 500, method: PATCH, pathSuffix: /status, times: 2}
      - {kind: error, status: 429, retryAfter: 2, resource: jobs, method: POST}
      - {kind: error, status: 500, served: true, resource: deployments}   # done, yet answered 500
      - {kind: slow, delay: 1.5, probability: 0.3}
      - {kind: restart, after: 5, duration: 3}           # every request 503, every watch ended
      - {kind: dropWatches, resource: jobs, every: 4, times: 3}
      - {kind: expireWatches, resource: modelreleases}   # ERROR 410 in the stream, then it ends

``error`` and ``slow`` match requests by ``method``, ``pathSuffix``/``pathContains``/``pathRegex``,
``resource`` (the plural in the path) and ``watch`` (true: only watch requests, false: none); they
apply ``times`` times (null: until cleared), each matching request with ``probability``. Every entry
counts its ``hits``. Thread-safe: the server's loop takes faults, tests arm them from their thread.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web

from modelrelease_local import errors

__all__ = ["Fault", "FaultInjector", "OpenWatch", "Restart", "WatchDisruption", "error_response",
           "error_status", "resource_of"]

_TICK = 0.05  # seconds between looks at the timed entries of a plan


def resource_of(path: str) -> str | None:
    """The resource plural a request's path names (/api/v1/namespaces/ns/pods/x -> pods), if any."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        rest = rest[2:]
    return rest[0] if rest else None


@dataclasses.dataclass
class Fault:
    """An armed failure: matching requests are answered with ``status`` (after ``delay`` seconds)
    instead of being served; ``status=None`` serves them, only ``delay`` seconds late."""
    status: int | None
    method: str | None = None
    path_suffix: str | None = None
    path_contains: str | None = None
    path_regex: str | None = None
    resource: str | None = None
    watch: bool | None = None  # True: only watch requests; False: never them
    times: int | None = 1  # None: until cleared
    probability: float = 1.0
    reason: str | None = None
    message: str | None = None
    delay: float = 0.0
    retry_after: float | None = None  # seconds, sent as Retry-After and as details.retryAfterSeconds
    served: bool = False  # carry the request out first: the write happened, the answer says it failed
    # (a request that fails on its own is answered with its own error)
    predicate: Callable[[str, str, dict[str, str]], bool] | None = None  # (method, path, query) -> bool
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        is_watch = method == "GET" and query.get("watch") in ("true", "1")
        return ((self.method is None or method == self.method.upper()) and
                (self.path_suffix is None or path.endswith(self.path_suffix)) and
                (self.path_contains is None or self.path_contains in path) and
                (self.path_regex is None or re.search(self.path_regex, path) is not None) and
                (self.resource is None or resource_of(path) == self.resource) and
                (self.watch is None or self.watch == is_watch) and
                (self.predicate is None or self.predicate(method, path, query)))


@dataclasses.dataclass
class Restart:
    """The API server away for ``duration`` seconds from ``after`` seconds on: every request is
    answered 503 and the open watch-streams end when it begins. ``hits``: requests refused and
    streams ended."""
    after: float = 0.0
    duration: float = 3.0
    retry_after: float | None = None
    hits: int = 0
    began: bool = False
    starts_at: float = 0.0  # time.monotonic()

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.starts_at + self.duration

    def as_fault(self) -> Fault:
        return Fault(status=503, times=None, retry_after=self.retry_after, reason="ServiceUnavailable",
                     message="the API server is restarting")


@dataclasses.dataclass
class WatchDisruption:
    """Ends the open watch-streams of ``resource`` (None: of all) ``after`` seconds from now, then every
    ``every`` seconds, ``times`` rounds (None: forever). ``expire``: each stream gets an ERROR event
    with code 410 first, as on an etcd compaction. ``hits``: streams ended."""
    resource: str | None = None
    expire: bool = False
    after: float = 0.0
    every: float | None = None
    times: int | None = 1
    rounds: int = 0
    hits: int = 0
    due_at: float = 0.0  # time.monotonic()

    @property
    def exhausted(self) -> bool:
        return (self.times is not None and self.rounds >= self.times) or (self.rounds > 0 and self.every is None)


class OpenWatch:
    """One watch-stream being served; ``end`` closes it from any thread (its stream yields ``error`` last)."""

    def __init__(self, resource: str | None, close: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        self.resource = resource
        self.error: dict[str, Any] | None = None
        self._close, self._loop = close, loop
        self._ended = False

    def end(self, error: dict[str, Any] | None = None) -> bool:
        if self._ended:
            return False
        self._ended, self.error = True, error
        self._loop.call_soon_threadsafe(self._close)  # the watcher's queue belongs to the server's loop
        return True


_PLAN_KEYS = {
    "error": {"status", "method", "pathSuffix", "pathContains", "pathRegex", "resource", "watch", "times",
              "probability", "reason", "message", "delay", "retryAfter", "served"},
    "slow": {"delay", "method", "pathSuffix", "pathContains", "pathRegex", "resource", "watch", "times",
             "probability"},
    "restart": {"after", "duration", "retryAfter"},
    "dropWatches": {"resource", "after", "every", "times"},
    "expireWatches": {"resource", "after", "every", "times"},
}
_SNAKE = {"pathSuffix": "path_suffix", "pathContains": "path_contains", "pathRegex": "path_regex",
          "retryAfter": "retry_after"}
PlanEntry = Fault | Restart | WatchDisruption


def _entry(index: int, spec: Mapping[str, Any], now: float) -> PlanEntry:
    where = f"faults[{index}]"
    kind = spec.get("kind", "error")
    if kind not in _PLAN_KEYS:
        raise ValueError(f"{where}.kind: {kind!r} is not a fault kind; use one of {', '.join(_PLAN_KEYS)}")
    unknown = set(spec) - _PLAN_KEYS[kind] - {"kind"}
    if unknown:
        raise ValueError(f"{where}: {', '.join(sorted(unknown))} not known for kind {kind}; "
                         f"use {', '.join(sorted(_PLAN_KEYS[kind]))}")
    fields = {_SNAKE.get(key, key): value for key, value in spec.items() if key != "kind"}
    if kind == "error":
        if not isinstance(fields.get("status"), int) or not 400 <= fields["status"] <= 599:
            raise ValueError(f"{where}.status: an HTTP error code (400-599) is required, not {fields.get('status')!r}")
        return Fault(**fields)
    if kind == "slow":
        if not isinstance(fields.get("delay"), int | float) or fields["delay"] <= 0:
            raise ValueError(f"{where}.delay: the seconds to wait before answering are required, > 0")
        return Fault(status=None, **fields)
    if kind == "restart":
        restart = Restart(**fields)
        restart.starts_at = now + restart.after
        return restart
    disruption = WatchDisruption(expire=kind == "expireWatches", **fields)
    disruption.due_at = now + disruption.after
    return disruption


class FaultInjector:

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._restarts: list[Restart] = []
        self._disruptions: list[WatchDisruption] = []
        self._watches: set[OpenWatch] = set()
        self._random = random.Random(seed)

    # Arming.

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def load(self, plan: Mapping[str, Any]) -> list[PlanEntry]:
        """Arm a plan (see the module's documentation); returns its entries, to read their ``hits``."""
        unknown = set(plan) - {"seed", "faults"}
        if unknown:
            raise ValueError(f"fault plan: {', '.join(sorted(unknown))} not known; a plan has `seed` and `faults`")
        specs = plan.get("faults") or []
        if not isinstance(specs, list) or not all(isinstance(spec, Mapping) for spec in specs):
            raise ValueError("fault plan: `faults` must be a list of mappings, each with a `kind`")
        now = time.monotonic()
        entries = [_entry(index, spec, now) for index, spec in enumerate(specs)]
        with self._lock:
            if plan.get("seed") is not None:
                self._random.seed(plan["seed"])
            for entry in entries:
                if isinstance(entry, Fault):
                    self._faults.append(entry)
                elif isinstance(entry, Restart):
                    self._restarts.append(entry)
                else:
                    self._disruptions.append(entry)
        self.tick()
        return entries

    def restart(self, duration: float, *, retry_after: float | None = None) -> Restart:
        """The API server away from now on for ``duration`` seconds (503s; open watches end now)."""
        restart = Restart(duration=duration, retry_after=retry_after, starts_at=time.monotonic())
        with self._lock:
            self._restarts.append(restart)
        self.tick()
        return restart

    def drop_watches(self, resource: str | None = None, *, expire: bool = False) -> int:
        """End the open watch-streams of ``resource`` (all with None) now; with ``expire`` each gets a 410 first.
        Returns how many streams were ended."""
        error = _gone_event() if expire else None
        with self._lock:
            ending = [watch for watch in self._watches if resource is None or watch.resource == resource]
        return sum(watch.end(error) for watch in ending)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._restarts.clear()
            self._disruptions.clear()

    @property
    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # Taking, on the server's loop.

    def take(self, method: str, path: str, query: dict[str, str]) -> Fault | None:
        """Consume one hit of the oldest armed fault matching this request, if any (a restart first)."""
        now = time.monotonic()
        with self._lock:
            for restart in self._restarts:
                if restart.active(now):
                    restart.hits += 1
                    return restart.as_fault()
            for fault in self._faults:
                if fault.exhausted or not fault.matches(method, path, query):
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                fault.hits += 1
                if fault.exhausted:
                    self._faults.remove(fault)
                return fault
        return None

    def open_watch(self, resource: str | None, close: Callable[[], None]) -> OpenWatch:
        watch = OpenWatch(resource, close, asyncio.get_running_loop())
        with self._lock:
            self._watches.add(watch)
        return watch

    def closed_watch(self, watch: OpenWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def tick(self) -> None:
        """Carry out what the plan's timed entries ask for by now."""
        now = time.monotonic()
        with self._lock:
            beginning = [r for r in self._restarts if not r.began and r.active(now)]
            for restart in beginning:
                restart.began = True
            due = [d for d in self._disruptions if not d.exhausted and d.due_at <= now]
            for disruption in due:
                disruption.rounds += 1
                disruption.due_at = now + (disruption.every or 0.0)
            self._restarts = [r for r in self._restarts if now < r.starts_at + r.duration]
            self._disruptions = [d for d in self._disruptions if not d.exhausted]
        for restart in beginning:
            ended = self.drop_watches()
            with self._lock:  # take() counts this restart's refusals meanwhile
                restart.hits += ended
        for disruption in due:
            disruption.hits += self.drop_watches(disruption.resource, expire=disruption.expire)

    async def run(self, store: object) -> None:
        """The timed entries' clock, as a background task on the server's loop."""
        while True:
            self.tick()
            await asyncio.sleep(_TICK)


def error_status(fault: Fault) -> dict[str, Any]:
    """The ``Status`` body an injected error is answered with."""
    body = errors.status_body(errors.error_for_code(fault.status or 500, fault.message, fault.reason))
    if fault.retry_after is not None:
        body["details"] = {**(body.get("details") or {}), "retryAfterSeconds": _retry_after_seconds(fault)}
    return body


def error_response(fault: Fault) -> aiohttp.web.Response:
    headers = {} if fault.retry_after is None else {"Retry-After": str(_retry_after_seconds(fault))}
    return aiohttp.web.Response(body=json.dumps(error_status(fault)).encode(), status=fault.status or 500,
                                content_type="application/json", headers=headers)


def _retry_after_seconds(fault: Fault) -> int:
    return max(1, math.ceil(fault.retry_after or 0))  # Retry-After carries whole seconds


def _gone_event() -> dict[str, Any]:
    # What kube-apiserver sends when the watch cache no longer holds the stream's resourceVersion.
    gone = errors.gone("too old resource version: the watch history was compacted")
    return {"type": "ERROR", "object": errors.status_body(gone)}
