"""Waiting for something that should happen. The limits are generous bounds, not performance limits:
tests assert what happens, never how fast."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")
WAIT_TIMEOUT = 180.0


def wait_for(condition: Callable[[], T], message: str = "the condition", *, timeout: float = WAIT_TIMEOUT,
             interval: float = 0.1) -> T:
    """Poll until the condition returns something truthy; return it, or fail after the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}")
        time.sleep(interval)


async def async_wait_for(condition: Callable[[], T | Awaitable[T]], message: str = "the condition", *,
                         timeout: float = WAIT_TIMEOUT, interval: float = 0.2) -> T:
    """The same, for code running on an event loop; the condition may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {message}")
        await asyncio.sleep(interval)
