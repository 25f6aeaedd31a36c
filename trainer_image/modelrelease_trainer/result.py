"""The result contract: one JSON object the trainer leaves in its termination log, parsed by the operator.

Kept at most MAX_RESULT_BYTES and written on success and on failure. result_schema.json and
metrics_schema.json describe the same rules as the hand-written checks here (the trainer image carries
no JSON Schema library).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from datetime import UTC, datetime
from typing import Any, TypedDict

from modelrelease_trainer import exit_codes

SCHEMA_VERSION = 1
MAX_RESULT_BYTES = 2048
OPTIMIZERS = ("adam", "adamw", "sgd")
FAILURE_CODES = (exit_codes.UNEXPECTED, exit_codes.CONFIG_ERROR, exit_codes.DATA_ERROR, exit_codes.TRANSIENT)
_VERSION = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# As DVC names content (md5 of a file, md5 of a folder's listing + ".dir"), or sha256 of built-in arrays.
_DATA_HASH = re.compile(r"^(md5:[0-9a-f]{32}(\.dir)?|sha256:[0-9a-f]{64})$")
_DATA_HASH_RULE = 'md5:<32 hex> (a file), md5:<32 hex>.dir (a folder) or sha256:<64 hex> (a built-in dataset)'
TRAINING_COUNTS = {"workers": 1, "epochsRun": 0, "resumedFromEpoch": 0}
"""The integer fields about how a stage trained, and their minimum."""


class Metrics(TypedDict):
    accuracy: float
    precision: float
    recall: float
    f1: float
    loss: float
    samples: int
    """Evaluation samples."""
    trainSamples: int


class Result(TypedDict, total=False):
    schemaVersion: int
    ok: bool
    stage: str | None
    version: str | None
    artifactPath: str | None
    metrics: Metrics | None
    dataSource: str | None
    initFrom: str | None
    trainedAt: str | None
    optimizer: str | None
    epochs: int | None
    mixedPrecision: bool | None
    workers: int | None
    """Workers that trained the stage together."""
    epochsRun: int | None
    """Epochs this pod trained."""
    resumedFromEpoch: int | None
    """Epochs a checkpoint already held when this pod started; 0 for a fresh start."""
    dataHash: str | None
    """The content hash of the training data."""
    error: str | None
    exitCode: int


class ResultError(ValueError):
    """The text is not a valid result."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def success_result(
    *,
    stage: str,
    version: str,
    artifact_path: str,
    metrics: Metrics,
    data_source: str,
    init_from: str | None,
    optimizer: str,
    epochs: int,
    mixed_precision: bool,
    workers: int,
    epochs_run: int,
    resumed_from_epoch: int,
    data_hash: str,
    trained_at: str | None = None,
) -> Result:
    return Result(
        schemaVersion=SCHEMA_VERSION,
        ok=True,
        stage=stage,
        version=version,
        artifactPath=artifact_path,
        metrics=metrics,
        dataSource=data_source,
        initFrom=init_from,
        trainedAt=trained_at or utc_now(),
        optimizer=optimizer,
        epochs=epochs,
        mixedPrecision=mixed_precision,
        workers=workers,
        epochsRun=epochs_run,
        resumedFromEpoch=resumed_from_epoch,
        dataHash=data_hash,
        error=None,
    )


def failure_result(*, stage: str | None, exit_code: int, message: str) -> Result:
    one_line = " ".join(message.split()) or exit_codes.DESCRIPTIONS.get(exit_code, "failed")
    return Result(schemaVersion=SCHEMA_VERSION, ok=False, stage=stage, error=one_line, exitCode=exit_code)


def encode_result(result: Result) -> str:
    """Compact JSON within MAX_RESULT_BYTES; a long error message or data source is shortened to fit."""
    trimmed: dict[str, Any] = dict(result)
    for field in ("error", "dataSource", "initFrom"):
        text = _dumps(trimmed)
        excess = len(text.encode()) - MAX_RESULT_BYTES
        value = trimmed.get(field)
        if excess <= 0:
            return text
        if isinstance(value, str):
            keep = max(16, len(value.encode()) - excess - 8)
            trimmed[field] = value.encode()[:keep].decode(errors="ignore") + "..."
    text = _dumps(trimmed)
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise ResultError(f"the result is {len(text.encode())} bytes even when shortened; shorten --output")
    return text


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_atomically(path: str, text: str) -> None:
    """Replace path with text via a temp file in the same folder, so readers never see half a result.

    Kubernetes bind-mounts /dev/termination-log as a single file: renaming over a mount point fails
    (EBUSY) and /dev is not writable for a non-root user, so there we fall back to one in-place write.
    """
    folder = os.path.dirname(os.path.abspath(path))
    data = text.encode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".result-", dir=folder)
    except OSError:
        _write_in_place(path, data)
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _write_in_place(path, data)


def _write_in_place(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_result(text: str) -> dict[str, Any]:
    """Parse and validate a result (as the operator does); raises ResultError naming the bad field."""
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise ResultError(f"result is {len(text.encode())} bytes, more than {MAX_RESULT_BYTES}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ResultError(f"result is not JSON: {exc}") from None
    validate_result(value)
    return value  # type: ignore[no-any-return]


def validate_result(value: Any) -> None:
    if not isinstance(value, dict):
        raise ResultError("result must be a JSON object")
    allowed = set(Result.__annotations__)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ResultError(f"unknown field {unknown[0]!r}")
    for field in ("schemaVersion", "ok", "stage", "error"):
        if field not in value:
            raise ResultError(f"missing field {field!r}")
    if value["schemaVersion"] != SCHEMA_VERSION or isinstance(value["schemaVersion"], bool):
        raise ResultError(f"schemaVersion must be {SCHEMA_VERSION}")
    _expect(value, "ok", bool)
    _expect(value, "stage", str, nullable=True)
    if value["ok"]:
        _validate_success(value)
    else:
        _expect(value, "error", str)
        if not value["error"]:
            raise ResultError("error must not be empty when ok is false")
        if value.get("exitCode") not in FAILURE_CODES or isinstance(value.get("exitCode"), bool):
            raise ResultError(f"exitCode must be one of {list(FAILURE_CODES)} when ok is false")
        for field in ("version", "artifactPath", "dataSource", "initFrom", "trainedAt", "optimizer"):
            _expect(value, field, str, nullable=True)
        _expect(value, "mixedPrecision", bool, nullable=True)
        if value.get("epochs") is not None:
            _expect_int(value, "epochs", minimum=None)
        for field, minimum in TRAINING_COUNTS.items():
            if value.get(field) is not None:
                _expect_int(value, field, minimum=minimum)
        _expect(value, "dataHash", str, nullable=True)
        if value.get("dataHash") is not None:
            _expect_data_hash(value["dataHash"])
        if value.get("metrics") is not None:
            validate_metrics(value["metrics"])


def _validate_success(value: dict[str, Any]) -> None:
    for field in ("version", "artifactPath", "metrics", "dataSource", "initFrom", "trainedAt", "optimizer",
                  "epochs", "mixedPrecision", *TRAINING_COUNTS, "dataHash"):
        if field not in value:
            raise ResultError(f"missing field {field!r}")
    if value["error"] is not None:
        raise ResultError("error must be null when ok is true")
    if "exitCode" in value and (type(value["exitCode"]) is not int or value["exitCode"] != exit_codes.OK):
        raise ResultError("exitCode must be 0 when ok is true")
    for field in ("version", "artifactPath", "dataSource", "trainedAt", "optimizer"):
        _expect(value, field, str)
    _expect(value, "initFrom", str, nullable=True)
    _expect(value, "mixedPrecision", bool)
    if not _VERSION.match(value["version"]):
        raise ResultError("version must be sha256: followed by 64 lowercase hex digits")
    if not _TIMESTAMP.match(value["trainedAt"]):
        raise ResultError("trainedAt must be a UTC timestamp like 2026-01-31T12:00:00Z")
    if value["optimizer"] not in OPTIMIZERS:
        raise ResultError(f"optimizer must be one of {list(OPTIMIZERS)}")
    _expect_int(value, "epochs", minimum=0)
    for field, minimum in TRAINING_COUNTS.items():
        _expect_int(value, field, minimum=minimum)
    _expect(value, "dataHash", str)
    _expect_data_hash(value["dataHash"])
    validate_metrics(value["metrics"])


def _expect_data_hash(text: str) -> None:
    if not _DATA_HASH.match(text):
        raise ResultError(f"dataHash must be {_DATA_HASH_RULE}")


def validate_metrics(metrics: Any) -> None:
    """Validate the metrics object (also the content of metrics.json)."""
    if not isinstance(metrics, dict):
        raise ResultError("metrics must be a JSON object")
    expected = set(Metrics.__annotations__)
    if set(metrics) != expected:
        extra, missing = sorted(set(metrics) - expected), sorted(expected - set(metrics))
        raise ResultError(f"metrics fields: missing {missing}, unknown {extra}")
    for name in ("accuracy", "precision", "recall", "f1"):
        _expect_number(metrics, name, 0.0, 1.0)
    _expect_number(metrics, "loss", 0.0, math.inf)
    _expect_int(metrics, "samples", minimum=1)
    _expect_int(metrics, "trainSamples", minimum=1)


def _expect(obj: dict[str, Any], field: str, kind: type, nullable: bool = False) -> None:
    value = obj.get(field)
    if value is None and nullable:
        return
    if not isinstance(value, kind):
        raise ResultError(f"{field} must be a {kind.__name__}{' or null' if nullable else ''}")


def _expect_number(obj: dict[str, Any], field: str, low: float, high: float) -> None:
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ResultError(f"metrics.{field} must be a number in [{low}, {high}]")


def _expect_int(obj: dict[str, Any], field: str, minimum: int | None) -> None:
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ResultError(f"{field} must be an integer" + (f" >= {minimum}" if minimum is not None else ""))
