"""Training stages end to end on CPU: metrics, continuation, determinism, data formats, exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow.core.util import event_pb2

from modelrelease_trainer import artifact, exit_codes
from modelrelease_trainer.result import load_result, validate_metrics

from .helpers import DIGITS_30, DIGITS_60, FAST, Run, train


def test_stage1_learns_digits(stage1: Run) -> None:
    result = stage1.result
    assert result["ok"] is True and result["stage"] == "warmup" and result["error"] is None
    assert result["metrics"]["accuracy"] > 0.85
    assert result["metrics"]["samples"] == 359 and 420 <= result["metrics"]["trainSamples"] <= 445
    assert (result["optimizer"], result["epochs"], result["mixedPrecision"]) == ("adam", 6, False)
    assert result["dataSource"] == DIGITS_30 and result["initFrom"] is None
    assert result["artifactPath"] == str(stage1.output)
    assert (result["workers"], result["epochsRun"], result["resumedFromEpoch"]) == (1, 6, 0)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", result["dataHash"])
    assert sorted(p.name for p in stage1.output.iterdir()) == [
        "checkpoint", "dvc.yaml", "metrics.json", "model.keras", "params.yaml", "result.json", "saved_model",
        "tensorboard",
    ]


def test_the_data_hash_names_the_data_not_the_fraction(stage1: Run, stage2: Run) -> None:
    assert stage2.result["dataHash"] == stage1.result["dataHash"]  # ?fraction= is a parameter of the split


def test_params_record_every_hyper_parameter(stage1: Run, stage2: Run) -> None:
    params = yaml.safe_load((stage2.output / "params.yaml").read_text())
    assert params == {
        "stage": "grow", "data": DIGITS_60, "dataHash": stage1.result["dataHash"], "epochs": 6, "batchSize": 32,
        "optimizer": "adamw", "learningRate": 0.003, "weightDecay": 0.0001, "seed": 7, "evalFraction": 0.2,
        "mixedPrecision": False, "workers": 1, "initFrom": str(stage1.output),
        "initFromVersion": stage1.result["version"],
    }
    dvc = yaml.safe_load((stage2.output / "dvc.yaml").read_text())
    assert dvc == {"metrics": ["metrics.json"], "params": ["params.yaml"]}


def test_tensorboard_has_a_loss_and_accuracy_scalar_per_epoch(stage1: Run) -> None:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((stage1.output / "tensorboard").iterdir()):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, []).append((event.step, number))
    assert sorted(scalars) == ["accuracy", "loss"]
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3, 4, 5, 6]
    losses = [number for _, number in scalars["loss"]]
    assert losses[-1] < losses[0]  # it learned
    assert all(0.0 <= number <= 1.0 for _, number in scalars["accuracy"])


def test_the_saved_model_serves_the_same_probabilities(stage1: Run) -> None:
    model = keras.saving.load_model(stage1.output / "model.keras", compile=False)
    served = tf.saved_model.load(str(stage1.output / "saved_model" / "1")).signatures["serving_default"]
    features = np.random.default_rng(0).uniform(0, 16, size=(5, 64)).astype(np.float32)
    probabilities = served(features=tf.constant(features))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, model.predict(features, verbose=0), rtol=1e-5, atol=1e-6)


def test_metrics_file_and_result_agree(stage1: Run) -> None:
    metrics = json.loads((stage1.output / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics == stage1.result["metrics"]
    assert json.loads((stage1.output / "result.json").read_text()) == stage1.result
    assert load_result(stage1.raw) == stage1.result


def test_stage2_continues_from_stage1_without_losing_accuracy(stage1: Run, stage2: Run) -> None:
    assert stage2.result["initFrom"] == str(stage1.output) and stage2.result["optimizer"] == "adamw"
    assert stage2.result["metrics"]["samples"] == stage1.result["metrics"]["samples"]
    assert stage2.result["metrics"]["trainSamples"] > 1.9 * stage1.result["metrics"]["trainSamples"]
    assert stage2.result["metrics"]["accuracy"] >= stage1.result["metrics"]["accuracy"] - 0.01
    assert stage2.result["version"] != stage1.result["version"]


def test_init_from_really_loads_the_previous_model(workdir: Path, stage1: Run) -> None:
    # Zero epochs evaluate the loaded model: same eval split, so the very same metrics as stage 1.
    carried = train(workdir, "carried", "--data", DIGITS_60, "--init-from", str(stage1.output), *FAST,
                    "--epochs", "0")
    assert carried.exit_code == 0
    assert carried.result["metrics"]["accuracy"] == stage1.result["metrics"]["accuracy"]
    assert carried.result["version"] == stage1.result["version"]
    # The control: an untrained model guesses at about chance (10 classes).
    scratch = train(workdir, "scratch", "--data", DIGITS_60, *FAST, "--epochs", "0")
    assert scratch.result["metrics"]["accuracy"] < 0.3


def test_same_arguments_give_the_same_model_and_metrics(workdir: Path, stage1: Run) -> None:
    again = train(workdir, "warmup-again", "--data", DIGITS_30, "--optimizer", "adam", *FAST)
    assert again.result["metrics"] == stage1.result["metrics"]
    assert again.result["version"] == stage1.result["version"]
    other_seed = train(workdir, "warmup-seed", "--data", DIGITS_30, "--optimizer", "adam", *FAST, "--seed", "8")
    assert other_seed.result["version"] != stage1.result["version"]


def test_version_is_the_hash_of_the_saved_model(stage1: Run) -> None:
    model = keras.saving.load_model(stage1.output / "model.keras", compile=False)
    assert artifact.model_version(model) == stage1.result["version"]


def test_npz_and_csv_inputs_train(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(size=(120, 5))
    folder = workdir / "tabular"
    folder.mkdir()
    np.savez(folder / "blobs.npz", x=x, y=y)
    with open(folder / "blobs.csv", "w") as handle:
        handle.write("a,b,c,d,e,label\n")
        handle.writelines(",".join(f"{v:.6f}" for v in row) + f",{label}\n" for row, label in zip(x, y, strict=True))
    for name, source in (("npz", folder / "blobs.npz"), ("csv", folder / "blobs.csv")):
        run = train(workdir, name, "--data", str(source), *FAST, "--optimizer", "sgd", "--learning-rate", "0.05")
        assert run.exit_code == 0, run.result
        assert run.result["metrics"]["samples"] == 24 and run.result["metrics"]["accuracy"] > 0.9


def test_mixed_precision_on_cpu_is_allowed(workdir: Path) -> None:
    run = train(workdir, "mixed", "--data", "sklearn:digits?fraction=0.1", *FAST, "--epochs", "1",
                "--mixed-precision", "on")
    assert run.exit_code == 0 and run.result["mixedPrecision"] is True
    model = keras.saving.load_model(run.output / "model.keras", compile=False)
    assert model.get_layer("hidden_1").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: str(d / "missing.npz"), "does not exist"),
        (lambda d: (d / "broken.csv").write_text("a,label\n1,2\n3\n") and str(d / "broken.csv"), "line 3"),
    ],
    ids=["missing-file", "bad-csv"],
)
def test_bad_data_exits_65_and_says_why(workdir: Path, tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    run = train(tmp_path, "bad", "--data", make(tmp_path), *FAST)
    assert run.exit_code == exit_codes.DATA_ERROR
    assert run.result["ok"] is False and run.result["exitCode"] == 65 and run.result["stage"] == "bad"
    assert needle in run.result["error"] and "--data" in run.result["error"]
    load_result(run.raw)


def test_init_from_errors_exit_65(tmp_path: Path, stage1: Run) -> None:
    missing = train(tmp_path, "nothing", "--data", DIGITS_30, "--init-from", str(tmp_path / "none"), *FAST)
    assert missing.exit_code == 65 and "--init-from" in missing.result["error"]
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "model.keras").write_bytes(b"not a zip")
    corrupt = train(tmp_path, "corrupt-run", "--data", DIGITS_30, "--init-from", str(tmp_path / "corrupt"), *FAST)
    assert corrupt.exit_code == 65 and "corrupt" in corrupt.result["error"]
    (tmp_path / "narrow.csv").write_text("".join(f"{i},{i % 2}\n" for i in range(20)))
    shape = train(tmp_path, "shape", "--data", str(tmp_path / "narrow.csv"), "--init-from", str(stage1.output), *FAST)
    assert shape.exit_code == 65 and "expects 64" in shape.result["error"]


def test_unwritable_output_is_transient(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # --output below a regular file cannot be created
    run = train(tmp_path, "blocked", "--data", "sklearn:digits?fraction=0.1", *FAST, "--epochs", "1",
                "--output", str(tmp_path / "file" / "sub"))
    assert run.exit_code == exit_codes.TRANSIENT and "--output" in run.result["error"]


def test_divergence_is_a_config_error_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    run = train(tmp_path, "diverged", "--data", "sklearn:digits?fraction=0.1", *FAST, "--epochs", "2",
                "--optimizer", "sgd", "--learning-rate", "1e9")
    assert run.exit_code == exit_codes.CONFIG_ERROR
    assert "diverged in epoch 1" in run.result["error"] and "--learning-rate" in run.result["error"]
    assert not (run.output / "checkpoint").exists()  # a rerun with a lower rate is not refused
