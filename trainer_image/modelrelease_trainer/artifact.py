"""The model artifact folder: model.keras, metrics.json, result.json, and the model's version id.

The version id is "sha256:" + the SHA-256 of the model's architecture (its Keras config, keys sorted)
followed by every weight's path, dtype, shape and bytes, in model order. The .keras file itself is not
hashed: it is a zip that records the save time, so identical models would get different ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from modelrelease_trainer.exit_codes import DataError, TransientError

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
RESULT_FILE = "result.json"
_HASH_PREFIX = b"modelrelease-model-v1\n"


def model_version(model: keras.Model) -> str:
    digest = hashlib.sha256(_HASH_PREFIX)
    # The layer graph only: to_json() also carries the compile settings (optimizer, learning rate),
    # which say how a model was trained, not what it computes.
    architecture = {"class_name": type(model).__name__, "config": model.get_config()}
    digest.update(json.dumps(architecture, sort_keys=True, separators=(",", ":"), default=repr).encode())
    for variable in model.weights:
        array = np.ascontiguousarray(variable.numpy())
        digest.update(f"\n{variable.path}|{array.dtype.str}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def model_file(location: str | os.PathLike[str]) -> Path:
    """Accept an artifact folder or a .keras file."""
    path = Path(location)
    return path / MODEL_FILE if path.is_dir() or path.suffix != ".keras" else path


def load_model(location: str | os.PathLike[str], *, flag: str) -> keras.Model:
    path = model_file(location)
    if not path.is_file():
        raise DataError(f"{flag}: no model at {path}; point it at a trained stage's --output folder")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a damaged zip or config
        raise DataError(f"{flag}: cannot load {path} ({type(exc).__name__}: {exc}); the file may be corrupt") from None


def save_model(model: keras.Model, folder: str | os.PathLike[str]) -> Path:
    """Save next to the final name, then rename, so a reader never loads half a file."""
    target = Path(folder) / MODEL_FILE
    temporary = Path(folder) / f".{MODEL_FILE}.{os.getpid()}.tmp.keras"  # Keras insists on the suffix
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        model.save(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise TransientError(f"--output: cannot write {target} ({exc}); check the artifact volume") from None
    return target


def write_json(folder: str | os.PathLike[str], name: str, value: Any) -> Path:
    target = Path(folder) / name
    temporary = target.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        raise TransientError(f"--output: cannot write {target} ({exc}); check the artifact volume") from None
    return target


def recorded_version(folder: str | os.PathLike[str]) -> str | None:
    """The version the trainer recorded in result.json, if the folder has one."""
    try:
        value = json.loads((Path(folder) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = value.get("version") if isinstance(value, dict) else None
    return version if isinstance(version, str) else None
