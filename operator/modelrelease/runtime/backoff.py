"""How long a release's daemon waits after a pass that failed, as client-go's workqueue rate limiter does.

Errors back off exponentially with jitter (0.2 s doubling to 60 s by default), so that a failing API
server is not hammered and releases that failed together do not retry together. A write conflict is
not the server's trouble but a race lost: the pass is retried after a short jittered delay, without
growth. A throttled request (429, or 503 with Retry-After) waits at least what the server asked. A
pass that succeeds starts the growth over. One ``Backoff`` per release.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Literal

__all__ = ["Backoff", "BackoffPolicy", "RetryDelays"]


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    base: float = 0.2
    """Seconds of the first delay after an error (its ceiling, before jitter)."""
    cap: float = 60.0
    """The longest delay, however many errors in a row."""
    factor: float = 2.0
    jitter: Literal["full", "equal"] = "equal"
    """full: anywhere in [0, ceiling]; equal: in [ceiling/2, ceiling], which keeps a floor."""
    conflict: float = 0.2
    """The ceiling of the delay after a write conflict (equal jitter, no growth)."""

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff: base ({self.base}) must be above 0 and at most cap ({self.cap})")
        if self.factor < 1:
            raise ValueError(f"backoff: factor ({self.factor}) must be at least 1, or delays would shrink")


class Backoff:
    """The delays for one release: call one of ``error``/``conflict``/``throttled`` per failed pass,
    ``succeeded`` after a pass that went through."""

    def __init__(self, policy: BackoffPolicy | None = None, rng: random.Random | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self._random = rng or random.Random()
        self.failures = 0
        """Errors and throttles in a row since the last successful pass."""

    def ceiling(self) -> float:
        """The largest delay the next error may get."""
        return min(self.policy.cap, self.policy.base * self.policy.factor ** self.failures)

    def _jittered(self, ceiling: float) -> float:
        if self.policy.jitter == "full":
            return self._random.uniform(0.0, ceiling)
        return ceiling / 2 + self._random.uniform(0.0, ceiling / 2)

    def error(self) -> float:
        delay = self._jittered(self.ceiling())
        self.failures += 1
        return delay

    def conflict(self) -> float:
        return self.policy.conflict / 2 + self._random.uniform(0.0, self.policy.conflict / 2)

    def throttled(self, retry_after: float | None) -> float:
        """The server's Retry-After is a minimum: the back-off still grows, and wins when it is longer."""
        return max(retry_after or 0.0, self.error())

    def succeeded(self) -> None:
        self.failures = 0


class RetryDelays:
    """``count`` growing, jittered delays, drawn afresh each time the object is iterated: what kopf's
    retries of its own requests iterate once per request (``settings.networking.error_backoffs``)."""

    def __init__(self, count: int = 12, policy: BackoffPolicy | None = None) -> None:
        self.count = count
        self.policy = policy or BackoffPolicy(base=0.5, cap=30.0)

    def __iter__(self) -> Iterator[float]:
        backoff = Backoff(self.policy)
        return (backoff.error() for _ in range(self.count))
