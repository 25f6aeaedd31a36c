"""
What tests observe in the embedded API server: the request log (the faults it injects are in
:mod:`.faults`, re-exported here).

It is thread-safe: the server runs on its own loop (often in a background thread), while tests
read the log from their own thread.
"""
from __future__ import annotations

import collections
import dataclasses
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from modelrelease_local.faults import Fault, FaultInjector

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
