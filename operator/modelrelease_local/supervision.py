"""
The processes of the embedded default: started so that they die with it, and restarted when they die
before it.

:func:`popen` starts every child of the stack (operator, Prometheus, trainers, model servers). On
Linux the child asks the kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``), so
even a SIGKILL of ``up`` or ``demo``, which runs no cleanup, leaves nothing behind. The kernel sends
that signal when the *thread* that forked the child exits, not the process: so every child is forked
by one launcher thread that lives as long as the process. Forking from the caller's thread instead
would kill a model server started from the API server's loop thread as soon as that thread stops,
before the stack's orderly stop gives it its grace period, and kill a Prometheus restarted by a
supervisor thread when that thread ends. The signal is not inherited by grandchildren: the stack's
children start none of their own.

:class:`Supervisor` watches one child and starts it again when it exits unexpectedly, waiting 1 s
before the first restart and twice as long before each next one, up to 30 s; a child that has run
for a minute since its last start is stable again and the wait starts over at 1 s.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["RestartRecord", "Supervisor", "describe_exit", "popen"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
POLL_INTERVAL = 0.5


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


_prctl = _load_prctl()  # looked up once, before any fork: the child only makes the call


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: the kernel kills it once the forking thread is gone."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Launcher:
    """One thread, alive as long as the process, that forks every child (see the module's docs)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]],
                                                concurrent.futures.Future[subprocess.Popen[bytes]]]]
        self._requests = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="process-launcher", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
        self._requests.put((start, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            start, future = self._requests.get()
            try:
                future.set_result(start())
            except BaseException as exc:
                future.set_exception(exc)


_launcher = _Launcher()


def popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **kwargs)`` for a child that dies with this process, however it ends."""
    return _launcher.run(lambda: subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs))


def describe_exit(returncode: int) -> str:
    """``SIGKILL`` for a signal death, ``exit code 3`` otherwise."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclasses.dataclass
class RestartRecord:
    """What a supervisor has done so far, for the console and the live view."""

    name: str
    restarts: int = 0
    last_exit: str | None = None
    restarting_in: float | None = None
    """Seconds until the next try while the child is down; None while it runs."""

    def summary(self, *, countdown: bool = True) -> str | None:
        """``operator restarted 2 times (last exit: SIGKILL)``, or while it is down ``operator exited
        (SIGKILL), starting it again in 4 s``; None while it never had to. Without ``countdown`` the
        text changes only when something happens (for a console that prints each change)."""
        if self.last_exit is None:
            return None
        times = "once" if self.restarts == 1 else f"{self.restarts} times"
        if self.restarting_in is None:
            return f"{self.name} restarted {times} (last exit: {self.last_exit})"
        text = f"{self.name} exited ({self.last_exit}), starting it again"
        if countdown and self.restarting_in > 0:
            text += f" in {self.restarting_in:.0f} s"
        return text + (f" (restarted {times} before)" if self.restarts else "")


class Supervisor:
    """Restarts one child with back-off while the stack runs (see the module's docs).

    ``process`` returns the child now (None if it was never started); ``restart`` starts it again
    (and may raise: the next try waits longer).
    """

    def __init__(self, name: str, process: Callable[[], subprocess.Popen[bytes] | None],
                 restart: Callable[[], None], *, on_restart: Callable[[], None] | None = None) -> None:
        self.record = RestartRecord(name)
        self._process = process
        self._restart = restart
        self._on_restart = on_restart
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"supervise-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more restarts (call it before stopping the child itself)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(90)

    def _loop(self) -> None:
        backoff = FIRST_BACKOFF
        started = time.monotonic()
        while not self._stop.wait(POLL_INTERVAL):
            process = self._process()
            returncode = None if process is None else process.poll()
            if process is None or returncode is None:
                if time.monotonic() - started >= STABLE_AFTER:
                    backoff = FIRST_BACKOFF
                continue
            self.record.last_exit = describe_exit(returncode)
            self.record.restarting_in = backoff
            logger.warning("The %s exited (%s); starting it again in %.0f s", self.record.name,
                           self.record.last_exit, backoff)
            while True:  # until it starts, each try waiting longer
                if self._wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
                self.record.restarting_in = 0.0  # starting now
                try:
                    self._restart()
                    self.record.restarting_in = None
                    break
                except Exception as exc:
                    logger.error("Could not start the %s again: %s", self.record.name, exc)
                    self.record.last_exit = f"{describe_exit(returncode)}; a restart failed: {exc}"[:200]
            self.record.restarts += 1
            started = time.monotonic()
            if self._on_restart is not None:
                self._on_restart()

    def _wait(self, seconds: float) -> bool:
        """Count down in the record; True if the stack stops meanwhile."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self.record.restarting_in = left
            if self._stop.wait(min(left, POLL_INTERVAL)):
                return True
        return False
