"""Checkpoints: a trainer killed (SIGKILL) mid-training resumes from its last finished epoch, alone and as
one of two workers; a checkpoint of another training, or one that cannot be read, is refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from modelrelease_trainer import exit_codes
from modelrelease_trainer.checkpoint import CHECKPOINT_DIR, STATE_FILE
from modelrelease_trainer.result import load_result

from .conftest import WorkerPair
from .helpers import (
    DIGITS_30,
    FAST,
    Run,
    TrainerProcess,
    loopback_addresses,
    start_workers,
    stop_all,
    tf_config,
    train,
)

STAGE1_ARGS = ("--data", DIGITS_30, "--optimizer", "adam", *FAST)  # stage1's flags: 6 epochs
EPOCHS = 6


@dataclass(frozen=True)
class Interrupted:
    output: Path
    epochs_saved: int
    """Epochs the checkpoint held when the first process was killed."""
    killed_code: int
    resumed: TrainerProcess


def read_state(output: Path) -> dict[str, object]:
    return json.loads((output / CHECKPOINT_DIR / STATE_FILE).read_text())  # type: ignore[no-any-return]


def epoch_lines(process: TrainerProcess) -> list[str]:
    return [line for line in process.log().splitlines() if line.startswith("Epoch ")]


@pytest.fixture(scope="module")
def interrupted(workdir: Path) -> Interrupted:
    """stage1's training killed once epoch 3 is done, then started again with the same flags."""
    output = workdir / "interrupted"
    args = ("--stage", "warmup", "--output", str(output), *STAGE1_ARGS)
    first = TrainerProcess(workdir, "interrupted-first", *args)
    try:
        first.wait_for_line("Epoch 4/6")  # printed after epoch 3's checkpoint is written
    finally:
        first.kill()
    saved = read_state(output)["epochsDone"]
    assert isinstance(saved, int)
    second = TrainerProcess(workdir, "interrupted-again", *args)
    assert second.wait() == 0, second.log()[-3000:]
    return Interrupted(output=output, epochs_saved=saved, killed_code=first.process.returncode, resumed=second)


def test_a_killed_trainer_resumes_from_its_last_finished_epoch(interrupted: Interrupted, stage1: Run) -> None:
    assert interrupted.killed_code == -9  # it did not finish on its own
    assert 3 <= interrupted.epochs_saved < EPOCHS
    result = load_result(interrupted.resumed.termination_log.read_text())
    assert result["ok"] is True
    assert result["resumedFromEpoch"] == interrupted.epochs_saved
    assert result["epochsRun"] == EPOCHS - result["resumedFromEpoch"]
    assert epoch_lines(interrupted.resumed)[0] == f"Epoch {interrupted.epochs_saved + 1}/{EPOCHS}"
    # Weights, optimizer state and each epoch's shuffle are restored exactly: the very model of an
    # uninterrupted run.
    assert result["version"] == stage1.result["version"]
    assert result["metrics"] == stage1.result["metrics"]
    assert read_state(interrupted.output)["epochsDone"] == EPOCHS


def test_the_resumed_model_is_usable(interrupted: Interrupted) -> None:
    model = keras.saving.load_model(interrupted.output / "model.keras", compile=False)
    digits = load_digits()
    predicted = np.asarray(model.predict(digits.data.astype(np.float32), verbose=0)).argmax(axis=1)
    assert float(np.mean(predicted == digits.target)) > 0.85
    assert (interrupted.output / "saved_model" / "1" / "saved_model.pb").is_file()


def test_the_checkpoint_keeps_only_the_last_epoch(interrupted: Interrupted) -> None:
    assert sorted(p.name for p in (interrupted.output / CHECKPOINT_DIR).iterdir()) == ["epoch-000006", STATE_FILE]


def test_a_finished_training_trains_no_more_epochs(interrupted: Interrupted) -> None:
    before = load_result(interrupted.resumed.termination_log.read_text())
    again = train(interrupted.output.parent, "finished-again", "--stage", "warmup", "--output",
                  str(interrupted.output), *STAGE1_ARGS)
    assert again.exit_code == 0, again.result
    assert (again.result["resumedFromEpoch"], again.result["epochsRun"]) == (EPOCHS, 0)
    assert again.result["version"] == before["version"]
    assert again.result["metrics"] == before["metrics"]


def test_another_training_in_the_same_output_is_refused(interrupted: Interrupted) -> None:
    state = (interrupted.output / CHECKPOINT_DIR / STATE_FILE).read_bytes()
    other = train(interrupted.output.parent, "other-rate", "--stage", "warmup", "--output", str(interrupted.output),
                  *STAGE1_ARGS, "--learning-rate", "0.01")
    assert other.exit_code == exit_codes.CONFIG_ERROR
    error = other.result["error"]
    assert str(interrupted.output / CHECKPOINT_DIR) in error
    assert "--learning-rate was 0.003, now 0.01" in error and "fresh --output" in error
    assert (interrupted.output / CHECKPOINT_DIR / STATE_FILE).read_bytes() == state  # left as it was


def test_an_unreadable_checkpoint_is_a_data_error(tmp_path: Path, interrupted: Interrupted) -> None:
    garbled = tmp_path / "garbled"
    (garbled / CHECKPOINT_DIR).mkdir(parents=True)
    (garbled / CHECKPOINT_DIR / STATE_FILE).write_text("{half a file")
    run = train(tmp_path, "garbled-run", "--stage", "warmup", "--output", str(garbled), *STAGE1_ARGS)
    assert run.exit_code == exit_codes.DATA_ERROR
    assert str(garbled / CHECKPOINT_DIR) in run.result["error"] and "not JSON" in run.result["error"]
    # A state that is fine but weights that are not.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(interrupted.output / CHECKPOINT_DIR, corrupt / CHECKPOINT_DIR)
    (corrupt / CHECKPOINT_DIR / "epoch-000006" / "model.npz").write_bytes(b"not an npz")
    run = train(tmp_path, "corrupt-run", "--stage", "warmup", "--output", str(corrupt), *STAGE1_ARGS)
    assert run.exit_code == exit_codes.DATA_ERROR
    assert str(corrupt / CHECKPOINT_DIR) in run.result["error"] and "model.npz" in run.result["error"]


def test_two_workers_resume_after_one_is_killed(workdir: Path, pair: WorkerPair) -> None:
    # Both workers on one --output (a shared volume), found as an Indexed Job's pods find each other.
    output = workdir / "pair-interrupted"
    args = ("--data", DIGITS_30, "--optimizer", "adam", *FAST)
    first = start_workers(workdir, "pair-interrupted", [output, output], *args, env_style="indexed")
    try:
        first[0].wait_for_line("Epoch 4/6")  # the chief has written epoch 3's checkpoint
        first[1].kill()
        assert first[0].wait() == exit_codes.TRANSIENT
    finally:
        stop_all(first)
    lost = load_result(first[0].termination_log.read_text())
    assert lost["exitCode"] == 75 and "lost a peer worker" in lost["error"]
    saved = read_state(output)["epochsDone"]
    assert isinstance(saved, int) and 3 <= saved < EPOCHS

    again = start_workers(workdir, "pair-interrupted-again", [output, output], *args, env_style="indexed",
                          stage="pair-interrupted")
    try:
        codes = [process.wait() for process in again]
    finally:
        stop_all(again)
    assert codes == [0, 0], again[0].log()[-3000:] + again[1].log()[-3000:]
    for process in again:
        result = load_result(process.termination_log.read_text())
        assert (result["resumedFromEpoch"], result["epochsRun"]) == (saved, EPOCHS - saved)
        assert epoch_lines(process)[0] == f"Epoch {saved + 1}/{EPOCHS}"
        assert result["version"] == pair.chief.result()["version"]  # as if never interrupted


def test_a_chief_restarted_after_the_last_epoch_finishes_alone(tmp_path: Path, pair: WorkerPair) -> None:
    # The chief was killed while saving the model, after the last epoch's checkpoint; worker 1 had
    # finished and is gone for good (its index of the Job succeeded). No peer listens on these ports.
    output = tmp_path / "pair"
    shutil.copytree(pair.output, output)
    (output / "model.keras").unlink()
    shutil.rmtree(output / "saved_model")
    chief = TrainerProcess(tmp_path, "chief-alone", "--stage", "pair", "--output", str(output), "--data", DIGITS_30,
                           "--optimizer", "adam", *FAST, "--workers", "2",
                           env={"TF_CONFIG": tf_config(loopback_addresses(2), 0)})
    assert chief.wait() == 0, chief.log()[-3000:]
    result = load_result(chief.termination_log.read_text())
    assert (result["workers"], result["resumedFromEpoch"], result["epochsRun"]) == (2, EPOCHS, 0)
    assert result["version"] == pair.chief.result()["version"]
    assert (output / "model.keras").is_file() and (output / "saved_model" / "1" / "saved_model.pb").is_file()
