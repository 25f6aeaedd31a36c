"""SavedModel export in TensorFlow Serving's layout, loaded back with TensorFlow itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from modelrelease_trainer import data, export, train
from modelrelease_trainer.exit_codes import TransientError
from modelrelease_trainer.sources import parse_source


@pytest.fixture(scope="module")
def split() -> data.Split:
    return data.split_dataset(data.load_source(parse_source("sklearn:digits")), seed=3, eval_fraction=0.2)


def trained_model(split: data.Split) -> keras.Model:
    keras.utils.set_random_seed(3)
    model = train.build_model(split)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    model.fit(split.x_train, split.y_train, epochs=2, batch_size=64, verbose=0)
    return model


def serve(folder: Path, rows: np.ndarray) -> tf.Tensor:
    loaded = tf.saved_model.load(str(folder))
    signature = loaded.signatures["serving_default"]
    return signature(features=tf.constant(rows))["probabilities"]


def test_export_layout_signature_and_predictions(tmp_path: Path, split: data.Split) -> None:
    model = trained_model(split)
    folder = export.export_saved_model(model, str(tmp_path))
    assert folder == tmp_path / "saved_model" / "1"
    assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    assert sorted(p.name for p in (tmp_path / "saved_model").iterdir()) == ["1"]  # no temporary left

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["features"]
    assert inputs["features"].dtype == tf.float32 and inputs["features"].shape.as_list() == [None, 64]
    outputs = signature.structured_outputs
    assert list(outputs) == ["probabilities"]
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape.as_list() == [None, 10]

    rows = split.x_eval[:40]
    served = serve(folder, rows).numpy()
    np.testing.assert_allclose(served, model.predict(rows, verbose=0), rtol=1e-6, atol=1e-7)
    assert (served.argmax(axis=1) == split.y_eval[:40]).mean() > 0.7  # trained, not just wired up


def test_a_second_export_replaces_the_first(tmp_path: Path, split: data.Split) -> None:
    first = train.build_model(split)
    export.export_saved_model(first, str(tmp_path))
    second = trained_model(split)
    folder = export.export_saved_model(second, str(tmp_path))
    rows = split.x_eval[:10]
    np.testing.assert_allclose(serve(folder, rows).numpy(), second.predict(rows, verbose=0), rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["1"]


@pytest.fixture
def mixed_precision() -> Iterator[None]:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_model_exports_float32(tmp_path: Path, split: data.Split, mixed_precision: None) -> None:
    model = train.build_model(split)
    assert model.get_layer("hidden_1").compute_dtype == "float16"
    folder = export.export_saved_model(model, str(tmp_path))
    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["features"].dtype == tf.float32
    assert signature.structured_outputs["probabilities"].dtype == tf.float32
    rows = split.x_eval[:10]
    served = serve(folder, rows)
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), model.predict(rows, verbose=0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(served.numpy().sum(axis=1), 1.0, rtol=1e-3)


def test_unwritable_output_is_transient_naming_the_folder(tmp_path: Path, split: data.Split) -> None:
    model = train.build_model(split)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "saved_model").write_text("a file where the base path should be")
    with pytest.raises(TransientError, match=str(blocked / "saved_model" / "1")):
        export.export_saved_model(model, str(blocked))
