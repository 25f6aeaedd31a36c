"""The training loop: one custom loop for one worker and for many.

Keras' model.fit does not run under MultiWorkerMirroredStrategy, so every worker count trains here: each
replica computes its part of the global batch's mean loss, the optimizer sums the gradients across
replicas, and the strategy runs the step inside a tf.function. Each epoch shuffles with a seed derived
from --seed and the epoch number, so an epoch sees the same order whether the run started at epoch 1 or
resumed from a checkpoint, and on every worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from modelrelease_trainer import data
from modelrelease_trainer.distributed import sum_over_workers
from modelrelease_trainer.exit_codes import ConfigError, TransientError

# TensorBoard's scalar plugin reads a summary as a scalar by this metadata; writing it with tf.summary.write
# directly keeps the tensorboard package (which tf.summary.scalar imports) out of the trainer's dependencies.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    """1-based number of the epoch just finished."""
    loss: float
    """Mean training cross-entropy over the epoch, all workers together."""
    accuracy: float


EpochEnd = Callable[[EpochStats], None]


def run_epochs(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    first_epoch: int,
    on_epoch_end: EpochEnd,
) -> int:
    """Train epochs first_epoch..epochs (1-based, inclusive); returns how many ran."""
    step = _train_step(model, optimizer, strategy)
    for epoch in range(first_epoch, epochs + 1):
        print(f"Epoch {epoch}/{epochs}", flush=True)  # the embedded cluster reads progress from these lines
        totals = np.zeros(3)
        batches = strategy.experimental_distribute_dataset(_epoch_data(x, y, batch_size, seed, epoch))
        for index, batch in enumerate(batches):
            # Every worker knows each global batch's size (the last may be short): no collective to learn it.
            global_size = tf.constant(min(batch_size, len(y) - index * batch_size), tf.int64)
            for replica_totals in strategy.experimental_local_results(step(batch, global_size)):
                totals += replica_totals.numpy()
        # One sum over the workers per epoch, not per step: each step then waits on the gradients' only.
        loss_sum, correct, samples = sum_over_workers(strategy, totals)
        stats = EpochStats(epoch=epoch, loss=float(loss_sum / samples), accuracy=float(correct / samples))
        print(f"epoch {epoch}/{epochs}: loss {stats.loss:.4f} - accuracy {stats.accuracy:.4f}", flush=True)
        if not math.isfinite(stats.loss):
            raise ConfigError(f"training diverged in epoch {epoch} (loss {stats.loss}); lower --learning-rate")
        on_epoch_end(stats)
    return max(0, epochs - first_epoch + 1)


class TensorBoardScalars:
    """Per-epoch training loss and accuracy as TensorBoard scalars in one folder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._writer: Any = None  # created with the first scalar: a run that trains no epoch writes no log

    def write(self, stats: EpochStats) -> None:
        try:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.folder)
            with self._writer.as_default(step=stats.epoch):
                for tag, value in (("loss", stats.loss), ("accuracy", stats.accuracy)):
                    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)
            self._writer.flush()
        except tf.errors.OpError as exc:
            raise self._error(exc) from None

    def _error(self, exc: tf.errors.OpError) -> TransientError:
        return TransientError(f"--output: cannot write TensorBoard logs to {self.folder} ({exc.message})")


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: distinct per epoch, fixed by --seed."""
    return seed * 1_000_003 + epoch


def _epoch_data(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
    # One pass of a pipeline seeded for this epoch: its first shuffle order depends on that seed only.
    pipeline = data.training_pipeline(x, y, batch_size=batch_size, seed=epoch_seed(seed, epoch))
    options = tf.data.Options()
    # Every worker reads the same seeded order and keeps its share of each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return pipeline.with_options(options)


def _train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, strategy: Any) -> Any:
    per_example_loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_step(features: tf.Tensor, labels: tf.Tensor, global_size: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        # The last global batch may be short, and split unevenly: divide by what all replicas hold together.
        with tf.GradientTape() as tape:
            probabilities = model(features, training=True)
            losses = per_example_loss(labels, probabilities)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=global_size)
            scaled = optimizer.scale_loss(loss)  # multiplied by the loss scale under mixed precision
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if scales_loss:
            gradients = _overflow_everywhere_or_nowhere(context, gradients)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        predicted = tf.argmax(probabilities, axis=-1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return tf.stack([tf.reduce_sum(losses), correct, tf.cast(tf.size(labels), tf.float32)])

    @tf.function(reduce_retracing=True)
    def step(batch: Any, global_size: tf.Tensor) -> Any:
        features, labels = batch
        return strategy.run(replica_step, args=(features, labels, global_size))  # this worker's replicas' totals

    return step


def _overflow_everywhere_or_nowhere(context: Any, gradients: list[Any]) -> list[Any]:
    """The loss-scale optimizer decides on each worker from that worker's own gradients whether a step
    overflowed and is skipped. Workers that decide differently would wait for each other forever in the
    gradient sum; so when any replica overflowed, every replica's gradients are made non-finite."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
    overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflowed > 0, tf.constant(math.nan), tf.constant(0.0))
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in gradients]
