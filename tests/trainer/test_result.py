"""The result contract: JSON Schema files, the hand-written validator, size limit and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrelease_trainer import result as contract

from .helpers import Run

PACKAGE = Path(contract.__file__).parent
RESULT_SCHEMA = json.loads((PACKAGE / "result_schema.json").read_text())
METRICS_SCHEMA = json.loads((PACKAGE / "metrics_schema.json").read_text())

SUCCESS: dict[str, Any] = {
    "schemaVersion": 1, "ok": True, "stage": "warmup", "version": "sha256:" + "ab" * 32,
    "artifactPath": "/models/v1",
    "metrics": {"accuracy": 0.95, "precision": 0.95, "recall": 0.95, "f1": 0.95, "loss": 0.2, "samples": 360,
                "trainSamples": 430},
    "dataSource": "sklearn:digits?fraction=0.3", "initFrom": None, "trainedAt": "2026-11-28T15:00:00Z",
    "optimizer": "adam", "epochs": 5, "mixedPrecision": False, "workers": 2, "epochsRun": 3, "resumedFromEpoch": 2,
    "dataHash": "md5:" + "0f" * 16 + ".dir", "error": None,
}
FAILURE: dict[str, Any] = {"schemaVersion": 1, "ok": False, "stage": "warmup", "error": "--data: bad", "exitCode": 65}


def schema_accepts(value: Any) -> bool:
    return jsonschema.Draft202012Validator(RESULT_SCHEMA).is_valid(value)


def hand_accepts(value: Any) -> bool:
    try:
        contract.validate_result(value)
    except contract.ResultError:
        return False
    return True


def test_schemas_are_valid_and_share_the_metrics_definition() -> None:
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(METRICS_SCHEMA)
    shared = {k: v for k, v in METRICS_SCHEMA.items() if not k.startswith("$") and k not in ("title", "description")}
    assert RESULT_SCHEMA["$defs"]["metrics"] == shared


def test_trained_results_validate(stage1: Run, stage2: Run) -> None:
    for run in (stage1, stage2):
        assert len(run.raw.encode()) <= 2048
        jsonschema.validate(run.result, RESULT_SCHEMA)
        jsonschema.validate(json.loads((run.output / "metrics.json").read_text()), METRICS_SCHEMA)
        assert contract.load_result(run.raw) == run.result


def test_examples_validate_both_ways() -> None:
    for example in (SUCCESS, FAILURE):
        assert schema_accepts(example) and hand_accepts(example)


@pytest.mark.parametrize(
    "change",
    [
        {"ok": True, "error": "x"},
        {"version": "sha256:abc"},
        {"trainedAt": "yesterday"},
        {"optimizer": "rmsprop"},
        {"metrics": {**SUCCESS["metrics"], "accuracy": 1.5}},
        {"metrics": {**SUCCESS["metrics"], "samples": 0}},
        {"schemaVersion": 2},
        {"unknown": 1},
        {"exitCode": 64},
        {"workers": 0},
        {"workers": None},
        {"epochsRun": -1},
        {"resumedFromEpoch": 1.5},
        {"dataHash": "md5:abc"},
        {"dataHash": "sha1:" + "0" * 40},
        {"dataHash": None},
    ],
)
def test_invalid_successes_are_rejected_both_ways(change: dict[str, Any]) -> None:
    bad = {**SUCCESS, **change}
    assert not schema_accepts(bad) and not hand_accepts(bad)


@pytest.mark.parametrize("field", ["workers", "epochsRun", "resumedFromEpoch", "dataHash"])
def test_a_success_needs_every_training_field(field: str) -> None:
    bad = {k: v for k, v in SUCCESS.items() if k != field}
    assert not schema_accepts(bad) and not hand_accepts(bad)


@pytest.mark.parametrize(
    "data_hash", ["md5:" + "a" * 32, "md5:" + "a" * 32 + ".dir", "sha256:" + "b" * 64],
    ids=["file", "folder", "built-in"],
)
def test_every_data_hash_form_is_accepted(data_hash: str) -> None:
    good = {**SUCCESS, "dataHash": data_hash}
    assert schema_accepts(good) and hand_accepts(good)


def test_a_failure_may_leave_the_training_fields_out_or_null() -> None:
    nulls = {**FAILURE, "workers": None, "epochsRun": None, "resumedFromEpoch": None, "dataHash": None}
    assert schema_accepts(nulls) and hand_accepts(nulls)
    bad = {**FAILURE, "workers": 0}
    assert not schema_accepts(bad) and not hand_accepts(bad)


@pytest.mark.parametrize("change", [{"exitCode": 0}, {"exitCode": None}, {"error": ""}, {"error": None}])
def test_invalid_failures_are_rejected_both_ways(change: dict[str, Any]) -> None:
    bad = {**FAILURE, **change}
    assert not schema_accepts(bad) and not hand_accepts(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, -0.25, 2.5]) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)


@settings(max_examples=300, deadline=None)
@given(base=st.sampled_from([SUCCESS, FAILURE]), field=st.sampled_from([*SUCCESS, "exitCode"]), value=json_values)
def test_hand_validator_agrees_with_the_schema(base: dict[str, Any], field: str, value: Any) -> None:
    mutated = {**base, field: value}
    assert hand_accepts(mutated) == schema_accepts(mutated), mutated


@settings(max_examples=50, deadline=None)
@given(metric=st.sampled_from(sorted(SUCCESS["metrics"])), value=json_values)
def test_metrics_validator_agrees_with_the_schema(metric: str, value: Any) -> None:
    mutated = {**SUCCESS["metrics"], metric: value}
    try:
        contract.validate_metrics(mutated)
        accepted = True
    except contract.ResultError:
        accepted = False
    assert accepted == jsonschema.Draft202012Validator(METRICS_SCHEMA).is_valid(mutated)


def test_long_messages_are_shortened_to_fit() -> None:
    failure = contract.failure_result(stage="s", exit_code=65, message="line one\nline two " + "x" * 5000)
    text = contract.encode_result(failure)
    assert len(text.encode()) <= 2048
    loaded = contract.load_result(text)
    assert loaded["error"].startswith("line one line two x") and loaded["error"].endswith("...")
    success = contract.success_result(**{**_success_kwargs(), "data_source": "/data/" + "é" * 3000})
    assert len(contract.encode_result(success).encode()) <= 2048


def test_the_longest_realistic_success_fits() -> None:
    # Kubernetes names of 63 characters, deep volume paths, a long data path, every count at its widest.
    longest = contract.success_result(
        stage="s" * 63, version="sha256:" + "f" * 64, artifact_path="/models/" + "/".join(["d" * 60] * 4),
        metrics={"accuracy": 0.123456, "precision": 0.123456, "recall": 0.123456, "f1": 0.123456,
                 "loss": 12345.123456, "samples": 10**9, "trainSamples": 10**9},
        data_source="file:/data/" + "/".join(["p" * 60] * 4) + "?fraction=0.123456789",
        init_from="/models/" + "/".join(["i" * 60] * 4), optimizer="adamw", epochs=100000, mixed_precision=True,
        workers=64, epochs_run=100000, resumed_from_epoch=99999, data_hash="md5:" + "e" * 32 + ".dir",
        trained_at="2026-12-31T23:59:59Z",
    )
    text = contract.encode_result(longest)
    assert len(text.encode()) <= 2048
    assert contract.load_result(text) == longest  # nothing had to be shortened


def test_oversized_and_non_json_results_are_rejected() -> None:
    with pytest.raises(contract.ResultError, match="bytes"):
        contract.load_result(json.dumps({**FAILURE, "error": "x" * 3000}))
    with pytest.raises(contract.ResultError, match="not JSON"):
        contract.load_result("{")


def test_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "termination-log"
    target.write_text("old")
    contract.write_atomically(str(target), '{"new": 1}')
    assert target.read_text() == '{"new": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["termination-log"]  # no temp file left behind


def test_write_falls_back_to_in_place_when_no_temp_file_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like /dev/termination-log for a non-root user: the file is writable, its folder is not.
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    target = tmp_path / "termination-log"
    target.write_text("")
    monkeypatch.setattr(contract.tempfile, "mkstemp", refuse)
    contract.write_atomically(str(target), '{"ok": false}')
    assert target.read_text() == '{"ok": false}'


def test_write_falls_back_to_in_place_when_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Like a bind-mounted file: renaming over a mount point fails with EBUSY.
    def busy(*args: Any, **kwargs: Any) -> None:
        raise OSError(16, "Device or resource busy")

    target = tmp_path / "termination-log"
    target.write_text("")
    monkeypatch.setattr(contract.os, "replace", busy)
    contract.write_atomically(str(target), '{"ok": true}')
    assert target.read_text() == '{"ok": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["termination-log"]  # the temp file is cleaned up


def _success_kwargs() -> dict[str, Any]:
    return {
        "stage": "s", "version": "sha256:" + "0" * 64, "artifact_path": "/m", "metrics": SUCCESS["metrics"],
        "data_source": "sklearn:digits", "init_from": None, "optimizer": "adam", "epochs": 1,
        "mixed_precision": False, "workers": 1, "epochs_run": 1, "resumed_from_epoch": 0,
        "data_hash": "sha256:" + "0" * 64,
    }
