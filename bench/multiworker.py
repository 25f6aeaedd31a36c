"""Training throughput with 1 and 2 workers, and what checkpointing every epoch costs.

    .venv/bin/python bench/multiworker.py [--repeat 20] [--epochs 1,4] [--batch-sizes 256,4096]

Each run is the trainer's own command line (`python -m modelrelease_trainer train`), as a Job's pod runs
it; two workers are two processes with TF_CONFIG on loopback ports, as the embedded default runs them.
Throughput is taken from the difference between a short and a long run of the same stage, which cancels
the start-up (imports, the cluster handshake, tracing, evaluation and saving): samples/s =
train samples * (long - short epochs) / (long - short seconds). On one machine two workers share its
cores, so the ratio shows the cost of synchronising gradients, not the gain of a second node.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
from modelrelease_local.ports import free_port  # noqa: E402


def make_data(folder: pathlib.Path, repeat: int) -> pathlib.Path:
    x, y = load_digits(return_X_y=True)
    path = folder / "digits.npz"
    np.savez(path, x=np.tile(x, (repeat, 1)).astype("float32"), y=np.tile(y, repeat))
    return path


def train(data: pathlib.Path, output: pathlib.Path, workers: int, epochs: int, batch_size: int,
          env_extra: dict[str, str] | None = None) -> tuple[float, dict]:
    """Run one stage on ``workers`` local processes; wall seconds and the chief's result."""
    ports = [free_port() for _ in range(workers)]
    processes = []
    started = time.perf_counter()
    for index in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}})
        log = output.parent / f"{output.name}-worker{index}.log"
        command = [sys.executable, "-m", "modelrelease_trainer", "train", "--stage", "bench", "--data", str(data),
                   "--output", str(output), "--epochs", str(epochs), "--batch-size", str(batch_size),
                   "--workers", str(workers), "--mixed-precision", "off",
                   "--termination-log", str(output.parent / f"{output.name}-{index}.json")]
        with log.open("wb") as sink:
            processes.append((subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env), log))
    for process, log in processes:
        if process.wait(timeout=1800) != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"a worker failed:\n{tail}")
    seconds = time.perf_counter() - started
    result = json.loads((output.parent / f"{output.name}-0.json").read_text())
    return seconds, result


def throughput(data: pathlib.Path, folder: pathlib.Path, workers: int, epochs: tuple[int, ...],
               batch_size: int) -> tuple[float, dict]:
    folder.mkdir(exist_ok=True)
    short, _ = train(data, folder / f"w{workers}-short", workers, epochs[0], batch_size)
    long, result = train(data, folder / f"w{workers}-long", workers, epochs[1], batch_size)
    samples = result["metrics"]["trainSamples"] * (epochs[1] - epochs[0])
    return samples / (long - short), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="tile the digits this many times")
    parser.add_argument("--epochs", default="1,4", help="epochs of the short and the long run")
    parser.add_argument("--batch-sizes", default="256,4096", help="global batch sizes to compare at")
    args = parser.parse_args()
    epochs = tuple(int(e) for e in args.epochs.split(","))
    assert len(epochs) == 2 and epochs[1] > epochs[0]
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        folder = pathlib.Path(tmp)
        data = make_data(folder, args.repeat)
        print(f"{os.cpu_count()} CPU cores; epochs {epochs[0]} vs {epochs[1]}; the trainer's MLP on digits x "
              f"{args.repeat}")
        print(f"{'batch':>6} {'1 worker samples/s':>19} {'2 workers samples/s':>20} {'ratio':>6} "
              f"{'accuracy 1 / 2':>15}")
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            one, result_one = throughput(data, folder / f"b{batch_size}", 1, epochs, batch_size)
            two, result_two = throughput(data, folder / f"b{batch_size}", 2, epochs, batch_size)
            accuracy = f"{result_one['metrics']['accuracy']:.4f} / {result_two['metrics']['accuracy']:.4f}"
            print(f"{batch_size:>6} {one:>19.0f} {two:>20.0f} {two / one:>6.2f} {accuracy:>15}", flush=True)
        print_checkpoint_cost(folder, data, 256)


def print_checkpoint_cost(folder: pathlib.Path, data_file: pathlib.Path, batch_size: int, saves: int = 10) -> None:
    """The trainer's own epoch and its own checkpoint write, in this process: what one epoch's save adds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from modelrelease_trainer import data, train
    from modelrelease_trainer.checkpoint import Checkpoints
    from modelrelease_trainer.loop import run_epochs
    from modelrelease_trainer.sources import parse_source

    split = data.split_dataset(data.load_source(parse_source(str(data_file))), seed=0, eval_fraction=0.2)
    model = train.build_model(split)
    optimizer = train.make_optimizer("adam", 1e-3, 0.0)
    optimizer.build(model.trainable_variables)
    strategy = tf.distribute.get_strategy()
    epochs = []
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's per-epoch lines
        for epoch in (1, 2, 3):  # the first traces the step
            started = time.perf_counter()
            run_epochs(model, optimizer, strategy, split.x_train, split.y_train, batch_size=batch_size, seed=0,
                       epochs=epoch, first_epoch=epoch, on_epoch_end=lambda stats: None)
            epochs.append(time.perf_counter() - started)
    epoch_seconds = sum(epochs[1:]) / len(epochs[1:])
    checkpoints = Checkpoints(str(folder / "checkpoint-bench"), {"stage": "bench"})
    started = time.perf_counter()
    for epoch in range(1, saves + 1):
        checkpoints.save(epoch, model.weights, optimizer.variables)
    save_seconds = (time.perf_counter() - started) / saves
    size = sum(f.stat().st_size for f in (folder / "checkpoint-bench").rglob("*") if f.is_file())
    parameters = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"checkpoint per epoch: {save_seconds * 1000:.1f} ms for {parameters} parameters and their optimizer "
          f"state ({size / 1024:.0f} KiB on disk), against {epoch_seconds * 1000:.0f} ms per epoch of "
          f"{len(split.y_train)} samples: {save_seconds / epoch_seconds:.1%} of an epoch")


if __name__ == "__main__":
    main()
