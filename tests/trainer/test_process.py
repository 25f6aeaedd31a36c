"""The real command line, `python -m modelrelease_trainer train`, as the Job runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from modelrelease_trainer.result import load_result

from .helpers import clean_env


def run_cli(*args: str, log: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelrelease_trainer", "train", *args],
        capture_output=True, text=True, timeout=600, env=clean_env(TERMINATION_LOG=str(log)),
    )


def test_train_command_succeeds_and_writes_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run_cli("--stage", "cli", "--data", "sklearn:digits?fraction=0.2", "--output", str(tmp_path / "out"),
                   "--epochs", "2", "--optimizer", "sgd", "--learning-rate", "0.05", log=log)
    assert done.returncode == 0, done.stderr
    result = load_result(log.read_text())
    assert result["ok"] is True and result["stage"] == "cli" and result["metrics"]["accuracy"] > 0.5
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result  # also the last line of the log
    assert (tmp_path / "out" / "model.keras").is_file()


def test_bad_csv_exits_65_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,4,five\n")
    log = tmp_path / "termination-log"
    done = run_cli("--stage", "cli", "--data", str(tmp_path / "bad.csv"), "--output", str(tmp_path / "out"), log=log)
    assert done.returncode == 65
    result = load_result(log.read_text())
    assert result["exitCode"] == 65 and "line 3: label 'five' is not an integer" in result["error"]
    assert "line 3" in done.stderr


def test_bad_flag_exits_64_from_the_command_line(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = run_cli("--stage", "cli", "--data", "sklearn:digits", "--output", str(tmp_path), "--batch-size", "0",
                   log=log)
    assert done.returncode == 64 and "--batch-size" in done.stderr
    assert load_result(log.read_text())["exitCode"] == 64
