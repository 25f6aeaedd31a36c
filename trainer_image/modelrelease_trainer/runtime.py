"""TensorFlow process setup: seeds, determinism, mixed precision and the distribution strategy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from modelrelease_trainer.exit_codes import ConfigError

log = logging.getLogger(__name__)
MIXED_POLICY = "mixed_float16"


@dataclass(frozen=True)
class Runtime:
    strategy: Any
    """tf.distribute strategy to build and train the model under."""
    gpus: int
    mixed_precision: bool


def configure(*, seed: int, mixed_precision: str) -> Runtime:
    """Reset Keras state and set up the process; called once per training run (tests run several)."""
    if mixed_precision not in ("auto", "on", "off"):
        raise ConfigError(f"--mixed-precision must be auto, on or off, got {mixed_precision!r}")
    # A fresh session keeps auto-generated names and seeds independent of earlier runs in this process.
    keras.backend.clear_session()
    gpus = len(tf.config.list_physical_devices("GPU"))
    mixed = mixed_precision == "on" or (mixed_precision == "auto" and gpus > 0)
    if mixed and gpus == 0:
        log.warning("--mixed-precision on without a GPU: float16 on CPU is slower and less accurate")
    keras.mixed_precision.set_global_policy(MIXED_POLICY if mixed else "float32")
    # Same seed and flags give the same weights and metrics on CPU. On GPU, determinism makes TensorFlow
    # pick deterministic kernels too (slightly slower; fine for models this small).
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if gpus > 1:
        strategy: Any = tf.distribute.MirroredStrategy()
        log.info("training on %d GPUs with MirroredStrategy", gpus)
    else:
        strategy = tf.distribute.get_strategy()
        log.info("training on %s", "1 GPU" if gpus else "CPU")
    return Runtime(strategy=strategy, gpus=gpus, mixed_precision=mixed)
