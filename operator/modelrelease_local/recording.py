"""
What tests observe and steer in the embedded API server: the request log and injected faults.

Both are thread-safe: the server runs on its own loop (often in a background thread), while
tests read the log and arm faults from their own thread.
"""
from __future__ import annotations

import collections
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Fault", "FaultInjector", "RequestLog", "RequestRecord"]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    status: int
    body: Any = None  # the parsed request body (JSON/YAML), if any
    injected: bool = False  # answered by an injected fault, not by the store
    timestamp: float = dataclasses.field(default_factory=time.time)

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch") in ("true", "1")

    def matches(self, method: str | None = None, path_suffix: str | None = None,
                path_contains: str | None = None, path_regex: str | None = None) -> bool:
        return ((method is None or self.method == method.upper()) and
                (path_suffix is None or self.path.endswith(path_suffix)) and
                (path_contains is None or path_contains in self.path) and
                (path_regex is None or re.search(path_regex, self.path) is not None))


class RequestLog:
    """A bounded, thread-safe list of the requests served, oldest first."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=limit)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __getitem__(self, index: int) -> RequestRecord:
        return self.snapshot()[index]

    def filter(self, method: str | None = None, path_suffix: str | None = None,
               path_contains: str | None = None, path_regex: str | None = None, *,
               writes_only: bool = False) -> list[RequestRecord]:
        return [record for record in self.snapshot()
                if record.matches(method, path_suffix, path_contains, path_regex)
                and (record.is_write or not writes_only)]

    def count(self, method: str | None = None, path_suffix: str | None = None,
              path_contains: str | None = None, path_regex: str | None = None, *,
              writes_only: bool = False) -> int:
        return len(self.filter(method, path_suffix, path_contains, path_regex, writes_only=writes_only))

    def writes(self, path_contains: str | None = None) -> list[RequestRecord]:
        return self.filter(path_contains=path_contains, writes_only=True)


@dataclasses.dataclass
class Fault:
    """An armed failure: the next matching requests are answered with ``status`` instead of being served."""
    status: int
    method: str | None = None
    path_suffix: str | None = None
    path_contains: str | None = None
    path_regex: str | None = None
    times: int | None = 1  # None: until cleared
    reason: str | None = None
    message: str | None = None
    delay: float = 0.0  # seconds to wait before answering (e.g. to provoke client timeouts)
    predicate: Callable[[str, str, dict[str, str]], bool] | None = None  # (method, path, query) -> bool
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str, query: dict[str, str]) -> bool:
        probe = RequestRecord(method, path, query, None, 0)
        return (probe.matches(self.method, self.path_suffix, self.path_contains, self.path_regex) and
                (self.predicate is None or self.predicate(method, path, query)))


class FaultInjector:

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, query: dict[str, str]) -> Fault | None:
        """Consume one hit of the oldest armed fault matching this request, if any."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, path, query):
                    fault.hits += 1
                    if fault.exhausted:
                        self._faults.remove(fault)
                    return fault
        return None

    @property
    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)
