"""Helpers shared by the trainer tests: running the CLI in-process, trainer workers and the server as
subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from modelrelease_trainer import cli

DIGITS_30 = "sklearn:digits?fraction=0.3"
DIGITS_60 = "sklearn:digits?fraction=0.6"
# Few epochs of a small model keep the suite fast; the learning rate is raised to make them count.
FAST = ["--epochs", "6", "--learning-rate", "0.003", "--batch-size", "32", "--seed", "7", "--mixed-precision", "off"]
READY_WAIT_S = 180  # a bound on start-up (TensorFlow import), not a performance assertion
WORKER_RUN_S = 300  # a bound on one multi-worker training process, not a performance assertion


@dataclass(frozen=True)
class Run:
    exit_code: int
    result: dict[str, Any]
    """The termination message, parsed."""
    raw: str
    output: Path


def train(tmp: Path, name: str, *args: str) -> Run:
    """Run `train` in-process through the real CLI entry point (argv parsing, error mapping, result)."""
    output = tmp / name
    log = tmp / f"{name}.termination-log"
    code = cli.main(["train", "--stage", name, "--output", str(output), "--termination-log", str(log), *args])
    raw = log.read_text(encoding="utf-8")
    return Run(exit_code=code, result=json.loads(raw), raw=raw, output=output)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without settings that would change the server's defaults."""
    names = ("MODEL_", "RELEASE_TRACK", "INJECT_", "FEEDBACK_", "TERMINATION_LOG", "TF_CONFIG",
             "TRAINER_WORKER_HOSTS", "JOB_COMPLETION_INDEX")
    env = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


class ServerProcess:
    """`python -m modelrelease_trainer serve` on a free loopback port (--port 0; it prints the port)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # A file, not a pipe, so a chatty server never blocks on a full pipe buffer; closed in stop().
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelrelease_trainer", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env or clean_env(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the server prints one line with its address, then nothing
        if "http://" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.log()}")
        self.base = line.strip().rsplit(" ", 1)[-1]
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            if self.request("GET", "/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        except urllib.error.URLError:
            return 0, None
        text = payload.decode()
        return status, (json.loads(text) if text.startswith("{") else text)

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=60)
        self.stderr.close()
        return code


def loopback_addresses(count: int) -> list[str]:
    """host:port on 127.0.0.1 for each worker; all sockets are held until all ports are picked, so the
    ports are distinct."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(hosts: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


class TrainerProcess:
    """`python -m modelrelease_trainer train` as a pod runs it: its own termination log, its log in a file."""

    def __init__(self, tmp: Path, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.termination_log = tmp / f"{name}.termination-log"
        self.log_path = tmp / f"{name}.log"
        self.termination_log.unlink(missing_ok=True)
        with open(self.log_path, "w") as log:  # a file, not a pipe: a chatty worker never blocks
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelrelease_trainer", "train", *args,
                 "--termination-log", str(self.termination_log)],
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(**(env or {})),
            )

    def wait_for_line(self, line: str) -> None:
        """Until the log has this exact line (e.g. "Epoch 4/6"); fails if the process ends first."""
        deadline = time.monotonic() + WORKER_RUN_S
        while time.monotonic() < deadline:
            if line in self.log().splitlines():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"the trainer exited with {self.process.returncode} before {line!r}: "
                                     f"{self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} in the trainer's log")

    def wait(self) -> int:
        return self.process.wait(timeout=WORKER_RUN_S)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no handler runs, like a node lost or an OOM kill
        self.process.wait(timeout=60)

    def result(self) -> dict[str, Any]:
        return json.loads(self.termination_log.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def start_workers(tmp: Path, name: str, outputs: list[Path], *args: str, env_style: str = "TF_CONFIG",
                  stage: str | None = None) -> list[TrainerProcess]:
    """One trainer process per output folder, all of one stage (default: name), on free loopback ports.

    env_style "TF_CONFIG" gives each TensorFlow's own variable; "indexed" gives what the operator and an
    Indexed Job give a pod: TRAINER_WORKER_HOSTS and JOB_COMPLETION_INDEX.
    """
    hosts = loopback_addresses(len(outputs))
    processes = []
    for index, output in enumerate(outputs):
        if env_style == "TF_CONFIG":
            env = {"TF_CONFIG": tf_config(hosts, index)}
        else:
            env = {"TRAINER_WORKER_HOSTS": ",".join(hosts), "JOB_COMPLETION_INDEX": str(index)}
        processes.append(TrainerProcess(tmp, f"{name}-{index}", "--stage", stage or name, "--output", str(output),
                                        "--workers", str(len(outputs)), *args, env=env))
    return processes


def stop_all(processes: list[TrainerProcess]) -> None:
    for process in processes:
        if process.process.poll() is None:
            process.kill()
