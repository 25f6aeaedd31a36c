"""One training stage: load data, build or continue a model, train (resuming from a checkpoint), evaluate on
the held-out split, save.

Every worker of a multi-worker stage runs this; only the chief (worker 0) writes into --output, and every
worker returns the same outcome (the weights, and so the version id and metrics, are identical).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from modelrelease_trainer import artifact, data, distributed, export, lineage, loop, runtime
from modelrelease_trainer.checkpoint import Checkpoints, recorded_epochs
from modelrelease_trainer.exit_codes import ConfigError, DataError, TransientError
from modelrelease_trainer.result import Metrics
from modelrelease_trainer.sources import parse_source

log = logging.getLogger(__name__)
HIDDEN_UNITS = (128, 64)
METRIC_DIGITS = 6  # rounding keeps metrics.json readable and equal across identical runs
TENSORBOARD_DIR = "tensorboard"


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
    workers: int = 1

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
    workers: int
    epochs_run: int
    """Epochs this process trained."""
    resumed_from_epoch: int
    """Epochs the checkpoint already held when this process started (0: a fresh start)."""
    data_hash: str
    is_chief: bool
    """Whether this process wrote --output (worker 0)."""


def train(config: TrainConfig, report_stuck: Callable[[str | None], None] | None = None) -> TrainOutcome:
    """One stage. With several workers and report_stuck, the process ends if the workers never all meet;
    report_stuck(message) records that failure beforehand, report_stuck(None) withdraws it once they met."""
    cluster = distributed.resolve_cluster(config.workers, os.environ)  # before any work: a wrong env fails fast
    source = parse_source(config.data)
    split = data.split_dataset(
        data.load_source(source), seed=config.seed, eval_fraction=config.eval_fraction, fraction=source.fraction
    )
    log.info("stage %s: %s", config.stage, data.describe(split))
    data_hash = lineage.data_hash(source)
    # A worker that starts again after the last epoch was recorded (killed while saving, say) may find its
    # peers gone for good: the rest needs no peer, so it finishes alone. The checkpoint is checked in full
    # below, as for any start.
    alone = cluster.multi_worker and recorded_epochs(config.output) == config.epochs
    if alone:
        log.info("the checkpoint holds all %d epochs: worker %d finishes without its peers", config.epochs,
                 cluster.index)
    disarm = distributed.start_watchdog(distributed.LOCAL if alone else cluster, report_stuck)
    setup = runtime.configure(seed=config.seed, mixed_precision=config.mixed_precision,
                              cluster=distributed.LOCAL if alone else cluster)
    if cluster.is_chief:
        _create_output(config.output)
    with distributed.peer_failures_as_transient(cluster), _out_of_memory_as_transient():
        with setup.strategy.scope():
            model = _initial_model(config, split)
            optimizer = make_optimizer(config.optimizer, config.learning_rate, config.weight_decay)
            if setup.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
        params = hyper_parameters(config, data_hash, setup.mixed_precision, model if config.init_from else None)
        store = Checkpoints(config.output, {k: v for k, v in params.items() if k != "initFrom"})
        # Every worker checks the checkpoint it sees, and all resume from the epoch the chief sees.
        resumed = distributed.chief_value(setup.strategy, store.epochs_done())
        if disarm is not None:
            disarm()  # every worker got here: they met
        if resumed:
            store.restore(resumed, model.weights, optimizer.variables)
            log.info("resuming from the checkpoint after epoch %d of %d", resumed, config.epochs)
        epochs_run = loop.run_epochs(
            model, optimizer, setup.strategy, split.x_train, split.y_train, batch_size=config.batch_size,
            seed=config.seed, epochs=config.epochs, first_epoch=resumed + 1,
            on_epoch_end=_chief_records(config.output, store, model, optimizer) if cluster.is_chief else _skip,
        )
        distributed.wait_for_all(setup.strategy)
        trained = local_copy(model)
        metrics = evaluate(trained, split)
    if cluster.is_chief:
        artifact.save_model(trained, config.output)
        artifact.write_json(config.output, artifact.METRICS_FILE, metrics)
        lineage.write_dvc_files(config.output, params)
        export.export_saved_model(trained, config.output)
    mixed = any(layer.compute_dtype == "float16" for layer in trained.layers)
    if mixed != setup.mixed_precision:
        log.warning("the --init-from model keeps its saved precision (mixed: %s)", mixed)
    return TrainOutcome(
        version=artifact.model_version(trained),
        artifact_path=str(Path(config.output)),
        metrics=metrics,
        mixed_precision=mixed,
        workers=cluster.workers,
        epochs_run=epochs_run,
        resumed_from_epoch=resumed,
        data_hash=data_hash,
        is_chief=cluster.is_chief,
    )


def hyper_parameters(
    config: TrainConfig, data_hash: str, mixed: bool, init_model: keras.Model | None
) -> dict[str, object]:
    """What params.yaml records; all but the --init-from path also make the checkpoint's identity."""
    return {
        "stage": config.stage,
        "data": config.data,
        "dataHash": data_hash,
        "epochs": config.epochs,
        "batchSize": config.batch_size,
        "optimizer": config.optimizer,
        "learningRate": config.learning_rate,
        "weightDecay": config.weight_decay,
        "seed": config.seed,
        "evalFraction": config.eval_fraction,
        "mixedPrecision": mixed,
        "workers": config.workers,
        "initFrom": config.init_from,
        "initFromVersion": artifact.model_version(init_model) if init_model is not None else None,
    }


def local_copy(model: keras.Model) -> keras.Model:
    """The trained model outside the distribution strategy: evaluating, saving and exporting it then run
    on this worker alone, on the full evaluation split, the same on every worker."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _create_output(output: str) -> None:
    try:
        Path(output).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = exc.strerror or exc
        raise TransientError(f"--output: cannot create {output} ({detail}); check the artifact volume") from None


def _chief_records(output: str, store: Checkpoints, model: keras.Model, optimizer: Any) -> loop.EpochEnd:
    """After each epoch: TensorBoard scalars, then the checkpoint (a kill between the two repeats the epoch)."""
    scalars = loop.TensorBoardScalars(str(Path(output) / TENSORBOARD_DIR))

    def record(stats: loop.EpochStats) -> None:
        scalars.write(stats)
        store.save(stats.epoch, model.weights, optimizer.variables)

    return record


def _skip(stats: loop.EpochStats) -> None:
    """Workers other than the chief write nothing."""


@contextmanager
def _out_of_memory_as_transient() -> Iterator[None]:
    try:
        yield
    except tf.errors.ResourceExhaustedError as exc:
        raise TransientError(f"out of memory while training ({exc.message}); lower --batch-size or retry") from None


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
