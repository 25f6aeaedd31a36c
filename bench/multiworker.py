"""Training throughput with 1 and 2 workers, and what checkpointing every epoch costs.

    .venv/bin/python bench/multiworker.py [--repeat 20] [--epochs 4] [--batch-sizes 256,4096]

Each run is the trainer's own command line (`python -m modelrelease_trainer train`), as a Job's pod runs
it; two workers are two processes with TF_CONFIG on loopback ports, as the embedded default runs them.
Throughput is the chief's training samples per second over epochs 2 to N, timed by when its
`Epoch k/N` lines arrive: start-up, the cluster handshake, tracing (epoch 1), evaluation and saving
are left out. On one machine two workers share its
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
import threading
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


def train(data: pathlib.Path, output: pathlib.Path, workers: int, epochs: int, batch_size: int) -> tuple[float, dict]:
    """Run one stage on ``workers`` local processes; the chief's seconds per epoch after the first (which
    traces the step), timed by when its epoch lines arrive, and its result."""
    ports = [free_port() for _ in range(workers)]
    processes, arrivals = [], []
    for index in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                           "task": {"type": "worker", "index": index}})
        log = output.parent / f"{output.name}-worker{index}.log"
        command = [sys.executable, "-m", "modelrelease_trainer", "train", "--stage", "bench", "--data", str(data),
                   "--output", str(output), "--epochs", str(epochs), "--batch-size", str(batch_size),
                   "--workers", str(workers), "--mixed-precision", "off",
                   "--termination-log", str(output.parent / f"{output.name}-{index}.json")]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        processes.append((process, log, threading.Thread(target=_follow, args=(process, log, arrivals if index == 0
                                                                                 else None), daemon=True)))
        processes[-1][2].start()
    for process, log, reader in processes:
        reader.join(timeout=1800)
        if process.wait(timeout=60) != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise SystemExit(f"a worker failed:\n{tail}")
    # "Epoch k/n" starts epoch k; "epoch n/n: ..." ends the last one.
    starts = {int(line.split()[1].split("/")[0]): moment for moment, line in arrivals if line.startswith("Epoch ")}
    end = next(moment for moment, line in arrivals if line.startswith(f"epoch {epochs}/{epochs}:"))
    result = json.loads((output.parent / f"{output.name}-0.json").read_text())
    return (end - starts[2]) / (epochs - 1), result


def _follow(process: subprocess.Popen[bytes], log: pathlib.Path, arrivals: list | None) -> None:
    with log.open("wb") as sink:
        assert process.stdout is not None
        for raw in process.stdout:
            sink.write(raw)
            if arrivals is not None:
                arrivals.append((time.perf_counter(), raw.decode(errors="replace").strip()))


def throughput(data: pathlib.Path, folder: pathlib.Path, workers: int, epochs: int,
               batch_size: int) -> tuple[float, dict]:
    folder.mkdir(exist_ok=True)
    seconds, result = train(data, folder / f"w{workers}", workers, epochs, batch_size)
    return result["metrics"]["trainSamples"] / seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="tile the digits this many times")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    parser.add_argument("--batch-sizes", default="256,4096", help="global batch sizes to compare at")
    args = parser.parse_args()
    epochs = args.epochs
    if epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch traces the step and is not timed")
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        folder = pathlib.Path(tmp)
        data = make_data(folder, args.repeat)
        print(f"{os.cpu_count()} CPU cores; epochs 2 to {epochs} timed; the trainer's MLP on digits x "
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
    ends: list[float] = []
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's per-epoch lines
        started = time.perf_counter()
        run_epochs(model, optimizer, strategy, split.x_train, split.y_train, batch_size=batch_size, seed=0,
                   epochs=4, first_epoch=1, on_epoch_end=lambda stats: ends.append(time.perf_counter()))
    epochs = [later - earlier for earlier, later in zip([started, *ends], ends, strict=False)][1:]  # 1st traces
    epoch_seconds = sum(epochs) / len(epochs)
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
    # The write grows with the model: the same save for a model of about ten million parameters.
    import keras

    inputs = keras.Input(shape=(1024,))
    big = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(2048)(keras.layers.Dense(4096)(inputs))))
    big_optimizer = train.make_optimizer("adam", 1e-3, 0.0)
    big_optimizer.build(big.trainable_variables)
    large = Checkpoints(str(folder / "checkpoint-big"), {"stage": "big"})
    started = time.perf_counter()
    for epoch in range(1, 4):
        large.save(epoch, big.weights, big_optimizer.variables)
    big_seconds = (time.perf_counter() - started) / 3
    big_size = sum(f.stat().st_size for f in (folder / "checkpoint-big").rglob("*") if f.is_file())
    big_parameters = sum(int(np.prod(w.shape)) for w in big.weights)
    print(f"checkpoint per epoch of a {big_parameters / 1e6:.1f}M-parameter model: {big_seconds * 1000:.0f} ms "
          f"({big_size / 2**20:.0f} MiB with the optimizer state, on this machine's disk)")


if __name__ == "__main__":
    main()
