"""
One stack per state directory: an exclusive lock, and a pid file that says who holds it.

:class:`StateClaim` takes ``<state>/up.lock`` with ``flock`` (the kernel drops the lock when its
holder dies, however it dies, so a stale lock never blocks anyone) and then writes ``<state>/up.pid``:
the pid and start time of this process, which together name one process even once the pid is reused.
A second stack on the same directory fails at once with :class:`StateInUse`, naming the running one:
its pid, command line and start. The lock's file descriptor is not inherited by children (Python's
default), so a child that outlived its stack could not keep the directory claimed.

:func:`running_stacks` finds every live stack under a directory, e.g. the demo's in ``<state>/demo``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import pathlib

import psutil

__all__ = ["LOCK_FILE", "PID_FILE", "StateClaim", "StateInUse", "alive", "describe", "running_stack",
           "running_stacks", "started"]

LOCK_FILE = "up.lock"
PID_FILE = "up.pid"


class StateInUse(RuntimeError):
    """Another stack runs on this state directory."""


def started(process: psutil.Process) -> str:
    """When the process started: a pid and this name one process, never a reused pid."""
    return repr(process.create_time())


def alive(process: psutil.Process) -> bool:
    """Running (an exited process that its parent has not reaped yet, a zombie, is not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def running_stack(pid_file: pathlib.Path) -> psutil.Process | None:
    """The live stack this pid file names, if any (a stale file is removed)."""
    try:
        pid_text, start = pid_file.read_text().split()
        process = psutil.Process(int(pid_text))
        is_alive = started(process) == start and alive(process)
    except (OSError, ValueError, psutil.Error):
        is_alive = False
    if not is_alive:
        pid_file.unlink(missing_ok=True)
        return None
    return process


def running_stacks(root: pathlib.Path) -> list[tuple[pathlib.Path, psutil.Process]]:
    """Every live stack whose state directory is ``root`` or below it: (state directory, process)."""
    found = []
    pid_files = [root / PID_FILE] if (root / PID_FILE).exists() else []
    with contextlib.suppress(OSError):
        pid_files += [path for path in root.rglob(PID_FILE) if path.parent != root]
    for pid_file in pid_files:
        if (process := running_stack(pid_file)) is not None:
            found.append((pid_file.parent, process))
    return found


def describe(process: psutil.Process) -> str:
    """``pid 123 (python -m modelrelease_local up), since 2026-01-02 10:11:12``."""
    try:
        command = " ".join(process.cmdline()) or process.name()
        since = datetime.datetime.fromtimestamp(process.create_time()).strftime("%Y-%m-%d %H:%M:%S")
    except psutil.Error:
        return f"pid {process.pid}"
    return f"pid {process.pid} ({command}), since {since}"


class StateClaim:
    """``claim.acquire()`` ... ``claim.release()``: this process is the stack of ``state_dir``."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self.state_dir = state_dir
        self.pid_file = state_dir / PID_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Claim the directory, or raise :class:`StateInUse` naming the stack that has it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = running_stack(self.pid_file)
            who = describe(holder) if holder is not None else f"another process holds {self.state_dir / LOCK_FILE}"
            raise StateInUse(f"Already up on {self.state_dir}: {who}. Stop it with `python -m modelrelease_local "
                             f"--state-dir {self.state_dir} down`, or choose another --state-dir.") from None
        self._fd = fd
        this = psutil.Process()
        # Written whole or not at all: a reader never sees half a file.
        partial = self.pid_file.with_suffix(".pid.tmp")
        partial.write_text(f"{this.pid} {started(this)}")
        partial.replace(self.pid_file)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        self.pid_file.unlink(missing_ok=True)
        os.close(fd)  # the lock goes with the descriptor
