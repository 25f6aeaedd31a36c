"""`up`'s pid file names one process: its pid and start time; a zombie or a reused pid is not up."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import psutil

from modelrelease_local.__main__ import _running_up, _started
from tests.waiting import wait_for


def test_the_process_that_wrote_the_file_is_up(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "up.pid"
    this = psutil.Process()
    pid_file.write_text(f"{this.pid} {_started(this)}")
    running = _running_up(pid_file)
    assert running is not None and running.pid == this.pid
    assert pid_file.exists()


def test_a_reused_pid_or_a_bad_file_is_stale_and_removed(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "up.pid"
    for text in (f"{psutil.Process().pid} 12.5", "not a pid", f"{2**22 + 1} 1.0"):
        pid_file.write_text(text)
        assert _running_up(pid_file) is None
        assert not pid_file.exists()
    assert _running_up(pid_file) is None


def test_an_exited_unreaped_process_is_not_up(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "up.pid"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        process = psutil.Process(child.pid)
        pid_file.write_text(f"{child.pid} {_started(process)}")
        wait_for(lambda: process.status() == psutil.STATUS_ZOMBIE, message="the child to exit")
        assert _running_up(pid_file) is None
    finally:
        child.wait()
