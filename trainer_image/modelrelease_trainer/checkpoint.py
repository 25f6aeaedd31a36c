"""Resumable training: <output>/checkpoint/ holds the state after the last finished epoch.

A pod that is killed, evicted or preempted resumes on its next attempt from there instead of from
epoch 0. The layout is

  checkpoint/state.json          {"format", "epochsDone", "epochFolder", "identity", "identityHash"}
  checkpoint/epoch-000003/       model.npz (every model weight) and optimizer.npz (every optimizer variable)

Only the chief writes. An epoch folder is written under a temporary name and renamed when complete; then
state.json is replaced atomically to point at it; only then is the previous epoch folder removed. A kill at
any moment therefore leaves a state.json that points at a complete folder (or no state.json at all).

The identity names the training the checkpoint belongs to (stage, data and its content hash, every
hyper-parameter, the --init-from model's version, workers): resuming a different training would be a
silent mix of two, so another identity is an error, never a restart from epoch 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrelease_trainer.exit_codes import ConfigError, DataError, TransientError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
MODEL_ARRAYS = "model.npz"
OPTIMIZER_ARRAYS = "optimizer.npz"
FORMAT = 1
EPOCH_PREFIX = "epoch-"
_PATHS_KEY = "paths"
IDENTITY_FLAGS = {
    "stage": "--stage",
    "data": "--data",
    "dataHash": "the content of --data",
    "epochs": "--epochs",
    "batchSize": "--batch-size",
    "optimizer": "--optimizer",
    "learningRate": "--learning-rate",
    "weightDecay": "--weight-decay",
    "seed": "--seed",
    "evalFraction": "--eval-fraction",
    "mixedPrecision": "mixed precision (--mixed-precision)",
    "workers": "--workers",
    "initFromVersion": "the --init-from model's version",
}
"""The identity's fields, and how the error message names each."""


def identity_hash(identity: Mapping[str, object]) -> str:
    canonical = json.dumps(dict(identity), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def epoch_folder_name(epochs_done: int) -> str:
    return f"{EPOCH_PREFIX}{epochs_done:06d}"


def recorded_epochs(output: str) -> int | None:
    """The epochs a checkpoint in output says are done, without checking whose it is (None: no readable
    checkpoint). Cheap and free of TensorFlow, for deciding how to start; Checkpoints.epochs_done checks."""
    try:
        state = json.loads((Path(output) / CHECKPOINT_DIR / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    done = state.get("epochsDone") if isinstance(state, dict) else None
    return done if isinstance(done, int) and not isinstance(done, bool) else None


class Checkpoints:
    """The checkpoint folder of one --output, for one training identity."""

    def __init__(self, output: str, identity: Mapping[str, object]) -> None:
        unknown = sorted(set(identity) - set(IDENTITY_FLAGS))
        if unknown:
            raise ValueError(f"identity fields without a flag name: {unknown}")
        self.folder = Path(output) / CHECKPOINT_DIR
        self.identity = dict(identity)

    def epochs_done(self) -> int:
        """Epochs the checkpoint holds; 0 when there is none. Raises ConfigError for another training's
        checkpoint and DataError for one that cannot be read."""
        path = self.folder / STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0  # no checkpoint yet (a first epoch that never finished leaves none either)
        except OSError as exc:  # the volume, not the checkpoint (a stale NFS handle, say): worth a retry
            raise TransientError(f"--output: cannot read {self.folder / STATE_FILE} ({exc.strerror or exc}); "
                                 "check the artifact volume") from None
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise _unreadable(self.folder, f"{STATE_FILE} is not JSON ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise _unreadable(self.folder, f"{STATE_FILE} is not a format-{FORMAT} checkpoint state")
        done, stored = state.get("epochsDone"), state.get("identity")
        if isinstance(done, bool) or not isinstance(done, int) or done < 1 or not isinstance(stored, dict):
            raise _unreadable(self.folder, f"{STATE_FILE} lacks a valid epochsDone or identity")
        if state.get("epochFolder") != epoch_folder_name(done):
            raise _unreadable(self.folder, f"{STATE_FILE} points at {state.get('epochFolder')!r}, not at epoch {done}")
        if state.get("identityHash") != identity_hash(self.identity):
            raise ConfigError(
                f"{self.folder} holds the checkpoint of another training ({'; '.join(self._differences(stored))}); "
                f"delete {self.folder} to train this one from epoch 0, or use a fresh --output"
            )
        return done

    def restore(self, epochs_done: int, model_variables: Sequence[Any], optimizer_variables: Sequence[Any]) -> None:
        """Load the weights and optimizer state saved after epochs_done epochs."""
        folder = self.folder / epoch_folder_name(epochs_done)
        if not folder.is_dir():
            raise DataError(
                f"no checkpoint folder {folder} although the chief resumes from epoch {epochs_done}; "
                "every worker must mount the same --output volume"
            )
        _assign(folder / MODEL_ARRAYS, model_variables, self.folder)
        _assign(folder / OPTIMIZER_ARRAYS, optimizer_variables, self.folder)

    def save(self, epochs_done: int, model_variables: Sequence[Any], optimizer_variables: Sequence[Any]) -> None:
        """Record the state after epochs_done finished epochs (the chief only)."""
        name = epoch_folder_name(epochs_done)
        target = self.folder / name
        temporary = self.folder / f".{name}.{os.getpid()}.tmp"
        state = {"format": FORMAT, "epochsDone": epochs_done, "epochFolder": name, "identity": self.identity,
                 "identityHash": identity_hash(self.identity)}
        try:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
            _write_arrays(temporary / MODEL_ARRAYS, model_variables)
            _write_arrays(temporary / OPTIMIZER_ARRAYS, optimizer_variables)
            _fsync_folder(temporary)
            if target.exists():  # left by an attempt killed before its state.json pointed at it
                shutil.rmtree(target)
            os.replace(temporary, target)
            _write_state(self.folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            shutil.rmtree(temporary, ignore_errors=True)
            raise TransientError(
                f"--output: cannot write the checkpoint {target} ({exc.strerror or exc}); check the artifact volume"
            ) from None
        self._remove_all_but(name)

    def _remove_all_but(self, keep: str) -> None:
        for entry in self.folder.iterdir():
            stale = entry.name.startswith(EPOCH_PREFIX) or (entry.name.startswith(f".{EPOCH_PREFIX}")
                                                            and entry.name.endswith(".tmp"))
            if entry.is_dir() and stale and entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    def _differences(self, stored: Mapping[str, Any]) -> list[str]:
        changes = [
            f"{IDENTITY_FLAGS[key]} was {stored.get(key)!r}, now {value!r}"
            for key, value in self.identity.items()
            if stored.get(key) != value
        ]
        return changes or ["its identity differs"]


def _unreadable(folder: Path, why: str) -> DataError:
    return DataError(f"cannot resume from the checkpoint {folder}: {why}; delete {folder} to train from epoch 0")


def _write_arrays(path: Path, variables: Sequence[Any]) -> None:
    arrays: dict[str, Any] = {f"{i:04d}": np.asarray(variable.numpy()) for i, variable in enumerate(variables)}
    arrays[_PATHS_KEY] = np.array([str(getattr(variable, "path", variable.name)) for variable in variables],
                                  dtype=np.str_)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())


def _assign(path: Path, variables: Sequence[Any], folder: Path) -> None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            paths = [str(p) for p in archive[_PATHS_KEY]]
            arrays = [archive[f"{i:04d}"] for i in range(len(paths))]
    except (FileNotFoundError, ValueError, KeyError, EOFError) as exc:  # what is there is not a checkpoint
        raise _unreadable(folder, f"cannot read {path.name} ({exc})") from None
    except OSError as exc:  # the volume failed to read it: worth a retry
        raise TransientError(f"--output: cannot read {path} ({exc.strerror or exc}); check the artifact volume") \
            from None
    expected = [str(getattr(variable, "path", variable.name)) for variable in variables]
    if paths != expected or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables, strict=True)):
        raise _unreadable(folder, f"{path.name} does not fit this model's variables")
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array)


def _write_state(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the renames and new entries in a folder durable (a crash after rename keeps them)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
