"""The argument parser (the operator's Job builder is checked against it) and flag errors (exit 64)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelrelease_trainer import cli, exit_codes
from modelrelease_trainer.result import load_result
from modelrelease_trainer.serving import resolve_config

REQUIRED = ["train", "--stage", "s1", "--data", "sklearn:digits", "--output", "/models/v1"]


def test_train_defaults_parse_without_side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    modules_before = set(sys.modules)
    args = cli.build_parser().parse_args(REQUIRED)
    assert (args.command, args.stage, args.data, args.output) == ("train", "s1", "sklearn:digits", "/models/v1")
    assert args.init_from is None
    assert (args.epochs, args.batch_size, args.optimizer) == (5, 32, "adam")
    assert (args.learning_rate, args.weight_decay, args.mixed_precision) == (0.001, 0.0, "auto")
    assert (args.seed, args.eval_fraction, args.termination_log, args.workers) == (0, 0.2, None, 1)
    assert not any(m.startswith(("tensorflow", "keras")) for m in set(sys.modules) - modules_before)
    assert list(tmp_path.iterdir()) == []


def test_every_train_flag_parses() -> None:
    args = cli.build_parser().parse_args([
        *REQUIRED, "--init-from", "/models/v0", "--epochs", "3", "--batch-size", "64", "--optimizer", "adamw",
        "--learning-rate", "0.01", "--weight-decay", "0.004", "--mixed-precision", "on", "--seed", "9",
        "--eval-fraction", "0.25", "--termination-log", "/tmp/result", "--workers", "4",
    ])
    assert vars(args) == {
        "command": "train", "stage": "s1", "data": "sklearn:digits", "output": "/models/v1",
        "init_from": "/models/v0", "epochs": 3, "batch_size": 64, "optimizer": "adamw", "learning_rate": 0.01,
        "weight_decay": 0.004, "mixed_precision": "on", "seed": 9, "eval_fraction": 0.25,
        "termination_log": "/tmp/result", "workers": 4,
    }


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--epochs", "-1", "--epochs"),
        ("--epochs", "five", "--epochs"),
        ("--batch-size", "0", "--batch-size"),
        ("--optimizer", "rmsprop", "--optimizer"),
        ("--learning-rate", "0", "--learning-rate"),
        ("--learning-rate", "nan", "--learning-rate"),
        ("--weight-decay", "-0.1", "--weight-decay"),
        ("--mixed-precision", "maybe", "--mixed-precision"),
        ("--eval-fraction", "1", "--eval-fraction"),
        ("--workers", "0", "--workers"),
        ("--workers", "65", "--workers"),
        ("--workers", "two", "--workers"),
        ("--data", "s3://bucket/digits.npz", "unknown scheme"),
        ("--data", "sklearn:digits?fraction=1.5", "fraction"),
        ("--data", "sklearn:mnist", "unknown sklearn dataset"),
    ],
)
def test_bad_values_raise_usage_error_with_code_64(flag: str, value: str, needle: str) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args([*REQUIRED, flag, value])
    assert caught.value.code == exit_codes.CONFIG_ERROR
    assert isinstance(caught.value, cli.UsageError)
    assert needle in caught.value.message


def test_serve_flags_parse() -> None:
    args = cli.build_parser().parse_args(["serve", "--model", "/m", "--port", "9000", "--inject-error-rate", "0.3"])
    assert (args.model, args.port, args.inject_error_rate, args.name) == ("/m", 9000, 0.3, None)


def test_the_read_timeout_comes_from_the_flag_over_the_environment() -> None:
    parse = cli.build_parser().parse_args
    assert resolve_config(parse(["serve", "--model", "/m"]), {}).read_timeout_s == 30.0
    assert resolve_config(parse(["serve", "--model", "/m"]), {"READ_TIMEOUT_SECONDS": "5"}).read_timeout_s == 5.0
    flagged = parse(["serve", "--model", "/m", "--read-timeout", "2.5"])
    assert resolve_config(flagged, {"READ_TIMEOUT_SECONDS": "5"}).read_timeout_s == 2.5
    with pytest.raises(SystemExit):
        parse(["serve", "--model", "/m", "--read-timeout", "0"])


def test_bad_flag_writes_a_failure_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "termination-log"
    code = cli.main([*REQUIRED, "--epochs", "lots", "--termination-log", str(log)])
    assert code == exit_codes.CONFIG_ERROR
    result = load_result(log.read_text())
    assert result["ok"] is False and result["exitCode"] == 64 and result["stage"] == "s1"
    assert "--epochs" in result["error"]
    assert "--epochs" in capsys.readouterr().err


def test_missing_required_flag_uses_env_termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "from-env"
    monkeypatch.setenv("TERMINATION_LOG", str(log))
    assert cli.main(["train", "--stage", "s1", "--data", "sklearn:digits"]) == 64
    result = json.loads(log.read_text())
    assert result["exitCode"] == 64 and "--output" in result["error"]


def test_serve_without_model_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_PATH", raising=False)
    assert cli.main(["serve", "--port", "0"]) == exit_codes.CONFIG_ERROR


def test_serve_bad_env_value_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INJECT_ERROR_RATE", "often")
    assert cli.main(["serve", "--model", str(tmp_path), "--port", "0"]) == exit_codes.CONFIG_ERROR


def test_no_command_is_a_usage_error() -> None:
    assert cli.main([]) == exit_codes.CONFIG_ERROR
