"""
Change notification for the object store: the resourceVersion counter, a bounded history of recent
changes per resource type, as the API server's watch cache keeps one (so that watches can resume from
a resourceVersion, or get "410 Gone" when it is older than the history), and live subscriptions that
turn store changes into watch events for one filtered view.

The history of a resource type holds its last ``size`` changes (and, with ``max_age``, only those of
the last ``max_age`` seconds). A watch from a resourceVersion before the oldest remembered change of
its type is answered as kube-apiserver's watch cache answers it: 410 Expired, "too old resource
version: R (O)", O being one before the oldest remembered change.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import time
from collections.abc import Callable
from typing import Any

from modelrelease_local import errors
from modelrelease_local.resources import StorageKey

__all__ = ["EventLog", "StoreEvent", "Watcher"]

Object = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StoreEvent:
    type: str  # ADDED, MODIFIED, DELETED
    storage: StorageKey
    namespace: str | None
    object: Object  # the new state (or the last state for DELETED); never mutated after the commit
    old: Object | None
    rv: int


class _Subscription:
    def __init__(self, storage: StorageKey | None, namespace: str | None) -> None:
        self.storage = storage
        self.namespace = namespace
        self.queue: asyncio.Queue[StoreEvent | None] = asyncio.Queue()

    def accepts(self, event: StoreEvent) -> bool:
        return ((self.storage is None or event.storage == self.storage) and
                (self.namespace is None or event.namespace == self.namespace))


class EventLog:

    def __init__(self, size: int, *, max_age: float | None = None) -> None:
        if size < 1:
            raise ValueError(f"the watch history must hold at least one event per resource type, not {size}")
        self._size = size  # per resource type
        self.max_age = max_age
        self._rv = 0
        # Nothing at or before this resourceVersion is replayable, whatever the type (e.g. a restored store's).
        self._compacted_rv = 0
        self._logs: dict[StorageKey, collections.deque[tuple[float, StoreEvent]]] = {}
        self._evicted: dict[StorageKey, int] = {}  # per type: the newest resourceVersion no longer remembered
        self._subscriptions: set[_Subscription] = set()

    @property
    def last_rv(self) -> int:
        return self._rv

    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def publish(self, event: StoreEvent) -> None:
        log = self._logs.setdefault(event.storage, collections.deque())
        log.append((time.monotonic(), event))
        self._trim(event.storage)
        for subscription in list(self._subscriptions):
            if subscription.accepts(event):
                subscription.queue.put_nowait(event)

    def _trim(self, storage: StorageKey) -> None:
        log = self._logs.get(storage)
        if not log:
            return
        oldest_kept = None if self.max_age is None else time.monotonic() - self.max_age
        while log and (len(log) > self._size or (oldest_kept is not None and log[0][0] < oldest_kept)):
            self._evicted[storage] = log.popleft()[1].rv

    def _oldest_replayable(self, storage: StorageKey) -> int:
        """The oldest resourceVersion a watch of this type may start from."""
        self._trim(storage)
        floor = self._compacted_rv
        if storage in self._evicted:
            log = self._logs.get(storage)
            floor = max(floor, log[0][1].rv - 1 if log else self._evicted[storage])
        return floor

    def subscribe(self, storage: StorageKey | None, namespace: str | None) -> _Subscription:
        subscription = _Subscription(storage, namespace)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        self._subscriptions.discard(subscription)
        subscription.queue.put_nowait(None)

    def replay(self, since: int, subscription: _Subscription) -> list[StoreEvent]:
        storages = list(self._logs) if subscription.storage is None else [subscription.storage]
        oldest = max([self._compacted_rv, *(self._oldest_replayable(storage) for storage in storages)])
        if since < oldest:
            raise errors.gone(f"too old resource version: {since} ({oldest})")
        if since > self._rv:
            # A version from the future comes from a previous incarnation of the server (e.g. a restarted
            # process): make the client re-list instead of silently missing what exists now.
            raise errors.gone(f"unknown resource version: {since} (the latest is {self._rv})")
        logs = [[event for _, event in self._logs.get(storage, ())] for storage in storages]
        merged = heapq.merge(*logs, key=lambda event: event.rv)
        return [event for event in merged if event.rv > since and subscription.accepts(event)]

    def close_all(self) -> None:
        """End all watches (on server shutdown)."""
        for subscription in list(self._subscriptions):
            self.unsubscribe(subscription)

    @property
    def watcher_count(self) -> int:
        return len(self._subscriptions)


class Watcher:
    """
    One watch-stream: the initial events (if any), then the live ones, as (type, object) pairs.

    Everything that decides what the stream contains (the subscription, the initial listing,
    the replayed changes) is computed at construction, in one synchronous step of the loop,
    so that no change can fall between the initial state and the live events.
    """

    def __init__(self, log: EventLog, storage: StorageKey, namespace: str | None, *,
                 initial: list[Object] | None, since: int | None,
                 matches: Callable[[Object], bool], render: Callable[[Object], Object],
                 initial_bookmark: Object | None = None) -> None:
        self._log = log
        self._matches = matches
        self._render = render
        self._subscription = log.subscribe(storage, namespace)
        self._pending: collections.deque[tuple[str, Object]] = collections.deque()
        try:
            if initial is not None:
                self._pending.extend(("ADDED", obj) for obj in initial)
            if since is not None:
                for event in log.replay(since, self._subscription):
                    self._add_translated(event)
        except Exception:
            self.close()
            raise
        if initial_bookmark is not None:
            self._pending.append(("BOOKMARK", initial_bookmark))

    def _add_translated(self, event: StoreEvent) -> None:
        # A filtered watch sees objects entering and leaving its view as additions and deletions.
        if event.type == "MODIFIED":
            now = self._matches(event.object)
            before = event.old is not None and self._matches(event.old)
            kind = "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else None
        else:
            kind = event.type if self._matches(event.object) else None
        if kind is not None:
            self._pending.append((kind, event.object))

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> tuple[str, Object]:
        while not self._pending:
            event = await self._subscription.queue.get()
            if event is None:
                raise StopAsyncIteration
            self._add_translated(event)
        kind, obj = self._pending.popleft()
        return kind, (obj if kind == "BOOKMARK" else self._render(obj))

    def close(self) -> None:
        self._log.unsubscribe(self._subscription)
