"""Reference model server memory under abusive requests.

    .venv/bin/python bench/server_abuse.py [--model DIR] [--requests 150] [--stalled 50]

Without --model it first trains a small digits model into a temporary folder. The server runs as a real
subprocess; this prints its resident memory (RSS, psutil) before, at the peak during, and after N
abusive requests (8 MiB bodies of garbage and of numbers, 100 MiB claimed, deep nesting, chunked
bodies, clients that stall after their headers), and the ratio after/before. Each answer is counted by
status: a 5xx or a dead server ends the run with exit code 1.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from server_throughput import start_server, train_model  # a sibling script, not a package

MIB = 2**20
LIMIT = 8 * MIB  # the server's default body limit
ROW = b"[" + b", ".join([b"0.5"] * 64) + b"]"


def _numbers_body() -> bytes:
    """As many rows as fit under the limit: every one is parsed before the row count is refused."""
    rows = b", ".join([ROW] * ((LIMIT - 20) // (len(ROW) + 2)))
    return b'{"instances": [' + rows + b"]}"


ABUSES: dict[str, Callable[[], tuple[dict[str, str], bytes]]] = {
    "garbage 8 MiB": lambda: ({}, os.urandom(LIMIT)),
    "numbers 8 MiB": lambda: ({}, _numbers_body()),
    "one wide row": lambda: ({}, b'{"instances": [[' + b"0," * (LIMIT // 2 - 20) + b"0]]}"),
    "nesting 8 MiB": lambda: ({}, b"[" * LIMIT),
    "claims 100 MiB": lambda: ({"Content-Length": str(100 * MIB)}, b""),
    "chunked": lambda: ({"Transfer-Encoding": "chunked"}, b"10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"),
}


def send(address: tuple[str, int], headers: dict[str, str], body: bytes) -> int:
    """One request on its own connection; the status, or 0 when the server closed without one."""
    lines = ["POST /v1/models/model:predict HTTP/1.1", "Host: bench", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in {"Content-Length": str(len(body)), **headers}.items()
               if not (k == "Content-Length" and "Transfer-Encoding" in headers))]
    with socket.create_connection(address, timeout=60) as sock:
        with contextlib.suppress(OSError):  # answered and closed before the whole body went out
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            response.read()
        except (http.client.HTTPException, OSError):
            return 0
        return response.status


def stall(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Connections that send headers promising a body, then nothing: each holds a server thread."""
    stalled = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=60)
        sock.sendall(b"POST /v1/models/model:predict HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000\r\n\r\n")
        stalled.append(sock)
    return stalled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained --output folder")
    parser.add_argument("--requests", type=int, default=150, help="abusive requests to send")
    parser.add_argument("--stalled", type=int, default=50, help="clients that stall after their headers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_model(Path(scratch))
        process, base = start_server(model)
        host, port = base.removeprefix("http://").split(":")
        address = (host, int(port))
        server = psutil.Process(process.pid)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], server.memory_info().rss)

        try:
            send(address, {}, ROW.join([b'{"instances": [', b"]}"]))  # a valid predict: the model is warm
            before = server.memory_info().rss
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stalled = stall(address, args.stalled)
            bodies = {name: make() for name, make in ABUSES.items()}
            statuses: collections.Counter[tuple[str, int]] = collections.Counter()
            started = time.perf_counter()
            for index in range(args.requests):
                name = list(bodies)[index % len(bodies)]
                statuses[(name, send(address, *bodies[name]))] += 1
            elapsed = time.perf_counter() - started
            for sock in stalled:
                sock.close()
            time.sleep(1.0)  # let the server's threads for the closed connections end
            done.set()
            sampler.join()
            after = server.memory_info().rss
            alive = process.poll() is None
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"{args.requests} abusive requests in {elapsed:.1f} s, {args.stalled} stalled clients; answers:")
    for (name, status), count in sorted(statuses.items()):
        print(f"  {name:<16} {status or 'closed':>6} x{count}")
    print(f"RSS before {before / MIB:.0f} MiB, peak during {peak[0] / MIB:.0f} MiB, after {after / MIB:.0f} MiB, "
          f"after/before {after / before:.2f}")
    if not alive or any(status >= 500 for _, status in statuses):
        raise SystemExit("the server answered 5xx or died")


if __name__ == "__main__":
    main()
