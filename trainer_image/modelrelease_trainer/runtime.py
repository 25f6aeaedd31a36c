"""TensorFlow process setup: the distribution strategy, seeds, determinism and mixed precision."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from modelrelease_trainer import distributed
from modelrelease_trainer.distributed import Cluster
from modelrelease_trainer.exit_codes import ConfigError

log = logging.getLogger(__name__)
MIXED_POLICY = "mixed_float16"


@dataclass(frozen=True)
class Runtime:
    strategy: Any
    """tf.distribute strategy to build and train the model under."""
    gpus: int
    mixed_precision: bool
    cluster: Cluster


def configure(*, seed: int, mixed_precision: str, cluster: Cluster = distributed.LOCAL) -> Runtime:
    """Set up the process for one training run; called once per run (tests run several in one process)."""
    if mixed_precision not in ("auto", "on", "off"):
        raise ConfigError(f"--mixed-precision must be auto, on or off, got {mixed_precision!r}")
    gpus = len(tf.config.list_physical_devices("GPU"))  # reads the device list without starting TensorFlow
    # First: a multi-worker strategy must be created before TensorFlow runs any operation.
    strategy = distributed.make_strategy(cluster, gpus)
    # A fresh session keeps auto-generated names and seeds independent of earlier runs in this process.
    keras.backend.clear_session()
    mixed = mixed_precision == "on" or (mixed_precision == "auto" and gpus > 0)
    if mixed and gpus == 0:
        log.warning("--mixed-precision on without a GPU: float16 on CPU is slower and less accurate")
    keras.mixed_precision.set_global_policy(MIXED_POLICY if mixed else "float32")
    # Same seed and flags give the same weights and metrics on CPU, and the same on every worker. On GPU,
    # determinism makes TensorFlow pick deterministic kernels too (slightly slower; fine for models this small).
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return Runtime(strategy=strategy, gpus=gpus, mixed_precision=mixed, cluster=cluster)
