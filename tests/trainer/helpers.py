"""Helpers shared by the trainer tests: running the CLI in-process and the server as a subprocess."""

from __future__ import annotations

import json
import os
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
    names = ("MODEL_", "RELEASE_TRACK", "INJECT_", "FEEDBACK_", "TERMINATION_LOG")
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
