"""Export of a trained model as a SavedModel that TensorFlow Serving loads as it is.

Layout: <output>/saved_model is TensorFlow Serving's model base path and 1/ its only version, so a server
pointed at the base path (--model_base_path=<output>/saved_model) serves the version the trainer wrote.
The `serving_default` signature takes float32 `features` [None, num_features] (raw features: the model
normalises them itself) and returns float32 `probabilities` [None, classes], also for a model that computes
in float16 under mixed precision.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from modelrelease_trainer.exit_codes import TransientError

SAVED_MODEL_DIR = "saved_model"
SERVING_VERSION = "1"
SIGNATURE = "serving_default"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def export_saved_model(model: keras.Model, output: str) -> Path:
    """Write <output>/saved_model/1/ and return that folder.

    The export is written to a temporary folder beside the version folder and renamed into place, so a
    reader never loads half an export. An earlier export (from a previous attempt) is replaced.
    Raises TransientError naming the folder when it cannot be written.
    """
    base = Path(output) / SAVED_MODEL_DIR
    target = base / SERVING_VERSION
    # A dot name: TensorFlow Serving only considers folders whose name is an integer as versions.
    temporary = base / f".{SERVING_VERSION}.{os.getpid()}.tmp"
    previous = base / f".{SERVING_VERSION}.{os.getpid()}.old"
    try:
        base.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)  # left by a killed attempt with the same pid
        shutil.rmtree(previous, ignore_errors=True)  # an attempt killed before it removed the one it replaced
        _archive(model).write_out(str(temporary), verbose=False)
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
    except (OSError, tf.errors.OpError) as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        detail = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
        raise TransientError(
            f"--output: cannot write the SavedModel to {target} ({detail}); check the artifact volume"
        ) from None
    with contextlib.suppress(OSError):
        shutil.rmtree(previous)
    return target


def _archive(model: keras.Model) -> keras.export.ExportArchive:
    num_features = int(model.input_shape[-1])
    spec = tf.TensorSpec(shape=(None, num_features), dtype=tf.float32, name=INPUT_NAME)

    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        # The cast keeps the signature float32 whatever dtype the last layer computes in.
        return {OUTPUT_NAME: tf.cast(model(features, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[spec])
    return archive
