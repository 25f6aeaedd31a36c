"""The kubectl plugin and the Argo CD customizations against the real operator on the embedded API."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from tests.operator.conftest import Harness, harness, release_spec  # noqa: F401  (the fixture)

VENV_BIN = pathlib.Path(sys.executable).parent


def kubectl(h: Harness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real kubectl binary, which finds `kubectl-modelrelease` on PATH as any plugin."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(h.kubeconfig), "COLUMNS": "160"}
    return subprocess.run(["kubectl", "modelrelease", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def plugin_json(h: Harness, *args: str) -> Any:
    done = kubectl(h, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def waiting_spec(prometheus_url: str) -> dict[str, Any]:
    """The operator tests' spec, with steps that wait an hour: only a request moves them on."""
    spec = release_spec(prometheus_url)
    for stage in spec["stages"]:
        for step in stage["steps"]:
            step["duration"] = "1h"
    return spec
