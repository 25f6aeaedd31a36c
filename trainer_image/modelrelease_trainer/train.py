"""One training stage: load data, build or continue a model, train, evaluate on the held-out split, save."""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from modelrelease_trainer import artifact, data, runtime
from modelrelease_trainer.exit_codes import ConfigError, DataError, TransientError
from modelrelease_trainer.result import Metrics
from modelrelease_trainer.sources import parse_source

log = logging.getLogger(__name__)
HIDDEN_UNITS = (128, 64)
METRIC_DIGITS = 6  # rounding keeps metrics.json readable and equal across identical runs


@dataclass(frozen=True)
class TrainConfig:
    stage: str
    data: str
    output: str
    init_from: str | None = None
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.001
    weight_decay: float = 0.0
    mixed_precision: str = "auto"
    seed: int = 0
    eval_fraction: float = 0.2

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrainOutcome:
    version: str
    artifact_path: str
    metrics: Metrics
    mixed_precision: bool
    """Whether the trained model computes in float16 (an --init-from model keeps its saved policy)."""


def train(config: TrainConfig) -> TrainOutcome:
    source = parse_source(config.data)
    split = data.split_dataset(
        data.load_source(source), seed=config.seed, eval_fraction=config.eval_fraction, fraction=source.fraction
    )
    log.info("stage %s: %s", config.stage, data.describe(split))
    setup = runtime.configure(seed=config.seed, mixed_precision=config.mixed_precision)
    try:
        with setup.strategy.scope():
            model = _initial_model(config, split)
            model.compile(
                optimizer=make_optimizer(config.optimizer, config.learning_rate, config.weight_decay),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"],
            )
        if config.epochs > 0:
            pipeline = data.training_pipeline(
                split.x_train, split.y_train, batch_size=config.batch_size, seed=config.seed
            )
            model.fit(pipeline, epochs=config.epochs, verbose=2, shuffle=False)  # the pipeline shuffles
        metrics = evaluate(model, split)
    except tf.errors.ResourceExhaustedError as exc:
        raise TransientError(f"out of memory while training ({exc.message}); lower --batch-size or retry") from None
    artifact.save_model(model, config.output)
    artifact.write_json(config.output, artifact.METRICS_FILE, metrics)
    mixed = any(layer.compute_dtype == "float16" for layer in model.layers)
    if mixed != setup.mixed_precision:
        log.warning("the --init-from model keeps its saved precision (mixed: %s)", mixed)
    return TrainOutcome(
        version=artifact.model_version(model),
        artifact_path=str(Path(config.output)),
        metrics=metrics,
        mixed_precision=mixed,
    )


def _initial_model(config: TrainConfig, split: data.Split) -> keras.Model:
    if not config.init_from:
        return build_model(split)
    model = artifact.load_model(config.init_from, flag="--init-from")
    features, classes = model.input_shape[-1], model.output_shape[-1]
    if features != split.num_features:
        raise DataError(
            f"--data has {split.num_features} features but the --init-from model expects {features}"
        )
    if classes < split.num_classes:
        raise DataError(
            f"--data has labels up to {split.num_classes - 1} but the --init-from model has {classes} classes"
        )
    log.info("continuing from %s with a fresh %s optimizer", config.init_from, config.optimizer)
    return model


def build_model(split: data.Split) -> keras.Model:
    """A small MLP. Explicit layer names keep the architecture (and so the version id) independent of
    how many models this process built before."""
    low, high = float(split.x_train.min()), float(split.x_train.max())
    scale = 1.0 / (high - low) if high > low else 1.0
    inputs = keras.Input(shape=(split.num_features,), name="features")
    # Normalising inside the model means the server takes raw features, as the trainer saw them.
    hidden = keras.layers.Rescaling(scale, offset=-low * scale, name="normalise")(inputs)
    for i, units in enumerate(HIDDEN_UNITS, start=1):
        hidden = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(hidden)
    logits = keras.layers.Dense(split.num_classes, name="logits")(hidden)
    # float32 softmax: stable probabilities even under mixed precision.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="classifier")


def make_optimizer(name: str, learning_rate: float, weight_decay: float) -> keras.optimizers.Optimizer:
    decay = weight_decay or None  # None: Keras skips the decay step entirely
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, weight_decay=decay)
    raise ConfigError(f"--optimizer must be adam, adamw or sgd, got {name!r}")


def evaluate(model: keras.Model, split: data.Split) -> Metrics:
    probabilities = np.asarray(model.predict(split.x_eval, batch_size=1024, verbose=0), dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    truth = split.y_eval
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    picked = probabilities[np.arange(len(truth)), truth]
    loss = float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0))))
    if not math.isfinite(loss) or not np.all(np.isfinite(probabilities)):
        raise ConfigError("training diverged (non-finite predictions); lower --learning-rate")
    return Metrics(
        accuracy=round(float(accuracy_score(truth, predicted)), METRIC_DIGITS),
        precision=round(float(precision), METRIC_DIGITS),
        recall=round(float(recall), METRIC_DIGITS),
        f1=round(float(f1), METRIC_DIGITS),
        loss=round(loss, METRIC_DIGITS),
        samples=len(truth),
        trainSamples=len(split.y_train),
    )
