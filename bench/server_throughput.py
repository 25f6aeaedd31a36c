"""Reference model server throughput and latency on loopback.

    .venv/bin/python bench/server_throughput.py [--model DIR] [--duration 10] [--threads 1,4] [--instances 1]

Without --model it first trains a small digits model into a temporary folder. The server runs as a real
subprocess; each client thread keeps one HTTP/1.1 connection and sends predicts back to back. Client and
server share this machine's CPUs, so the figures are a floor for a dedicated server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_model(folder: Path) -> Path:
    command = [sys.executable, "-m", "modelrelease_trainer", "train", "--stage", "bench", "--data",
               "sklearn:digits", "--output", str(folder / "model"), "--epochs", "3",
               "--termination-log", str(folder / "result.json")]
    subprocess.run(command, check=True, capture_output=True)
    return folder / "model"


def start_server(model: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "modelrelease_trainer", "serve", "--model", str(model), "--host", "127.0.0.1",
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert process.stdout is not None
    base = process.stdout.readline().strip().rsplit(" ", 1)[-1]
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not become ready")


def client(base: str, body: bytes, stop_at: float, latencies: list[float], errors: list[int]) -> None:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        connection.request("POST", "/v1/models/model:predict", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            errors.append(response.status)
    connection.close()


def run(base: str, threads: int, duration: float, instances: int) -> tuple[int, float, float, float, int]:
    body = json.dumps({"instances": [[float(i % 17) for i in range(64)]] * instances}).encode()
    stop_at = time.perf_counter() + duration
    latencies: list[float] = []
    errors: list[int] = []
    workers = [threading.Thread(target=client, args=(base, body, stop_at, latencies, errors)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98]
    return len(latencies), len(latencies) / elapsed, p50, p99, len(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained --output folder")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--threads", default="1,4", help="client threads to try, comma separated")
    parser.add_argument("--instances", type=int, default=1, help="instances per predict request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_model(Path(scratch))
        process, base = start_server(model)
        try:
            run(base, 1, 1.0, args.instances)  # warm-up
            print(f"{args.instances} instance(s) per request, {args.duration:g} s per row, CPUs: {os.cpu_count()}")
            print(f"{'threads':>7} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
            for threads in (int(t) for t in args.threads.split(",")):
                count, rate, p50, p99, errors = run(base, threads, args.duration, args.instances)
                print(f"{threads:>7} {count:>9} {rate:>8.0f} {p50 * 1000:>8.2f} {p99 * 1000:>8.2f} {errors:>7}")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
