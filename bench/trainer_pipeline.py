"""Trainer input throughput: the tf.data pipeline the trainer uses vs. the same model fed in-memory tensors.

    .venv/bin/python bench/trainer_pipeline.py [--repeat 30] [--epochs 3] [--batch-sizes 32,256]

Both sides train the trainer's own model on the digits training pool (tiled --repeat times so an epoch is
long enough to time). The first epoch (tracing, cache fill) is not timed. Prints samples/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from modelrelease_trainer import data, runtime, train
from modelrelease_trainer.sources import parse_source


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def samples_per_second(feed: str, split: data.Split, batch_size: int, epochs: int) -> float:
    runtime.configure(seed=0, mixed_precision="off")
    model = train.build_model(split)
    model.compile(optimizer=train.make_optimizer("adam", 1e-3, 0.0), loss="sparse_categorical_crossentropy")
    timer = EpochTimer()
    if feed == "tf.data":
        pipeline = data.training_pipeline(split.x_train, split.y_train, batch_size=batch_size, seed=0)
        model.fit(pipeline, epochs=epochs + 1, verbose=0, shuffle=False, callbacks=[timer])
    else:
        x, y = tf.constant(split.x_train), tf.constant(split.y_train)
        model.fit(x, y, batch_size=batch_size, epochs=epochs + 1, verbose=0, shuffle=True, callbacks=[timer])
    timed = timer.seconds[1:]  # the first epoch traces the step function
    return len(split.y_train) * len(timed) / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="tile the training pool this many times")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--batch-sizes", default="32,256")
    args = parser.parse_args()
    base = data.split_dataset(data.load_source(parse_source("sklearn:digits")), seed=0, eval_fraction=0.2)
    split = data.Split(
        x_train=np.tile(base.x_train, (args.repeat, 1)), y_train=np.tile(base.y_train, args.repeat),
        x_eval=base.x_eval, y_eval=base.y_eval, num_classes=base.num_classes,
    )
    print(f"{len(split.y_train)} samples per epoch, {args.epochs} timed epochs, CPU threads: {os.cpu_count()}")
    print(f"{'batch':>6} {'tf.data samples/s':>18} {'in-memory samples/s':>20} {'ratio':>6}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        pipeline = samples_per_second("tf.data", split, batch_size, args.epochs)
        in_memory = samples_per_second("tensors", split, batch_size, args.epochs)
        print(f"{batch_size:>6} {pipeline:>18,.0f} {in_memory:>20,.0f} {pipeline / in_memory:>6.2f}")


if __name__ == "__main__":
    main()
