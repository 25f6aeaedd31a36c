"""The reference model server under abuse: random bodies, hostile headers, odd sizes and slow clients.

Whatever a client sends, the answer is a 4xx (or, for a client that stalls, a 408 or a closed
connection): never a 5xx, never a dead process. Throughout, /readyz and a valid predict keep answering.
One server process serves the whole module (TensorFlow is slow to import); its read timeout is short
so that the slow clients are cut off soon.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import Run, ServerProcess, clean_env

NAME = "digits"
FEATURES = 64
PREDICT = f"/v1/models/{NAME}:predict"
READ_TIMEOUT_S = 1.5
CLIENT_ERRORS = {400, 404, 405, 408, 411, 413, 414, 415, 422, 431}
VALID = json.dumps({"instances": [[0.5] * FEATURES]}).encode()


@pytest.fixture(scope="module")
def server(stage1: Run) -> Iterator[ServerProcess]:
    process = ServerProcess("--model", str(stage1.output), "--name", NAME,
                            env=clean_env(READ_TIMEOUT_SECONDS=str(READ_TIMEOUT_S)))
    yield process
    alive = process.process.poll() is None
    process.stderr.seek(0)
    log = process.stderr.read()
    assert process.stop() == 0 and alive, log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.base.removeprefix("http://").split(":")
    return host, int(port)


def exchange(server: ServerProcess, raw: bytes) -> int | None:
    """Send raw bytes as one request; the status of the answer, or None when the server just closed."""
    with socket.create_connection(address(server), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before taking everything
            sock.sendall(raw)
        return _status(sock)


def _status(sock: socket.socket) -> int | None:
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        response.read()
    except (http.client.HTTPException, OSError):
        return None
    return response.status


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    given = {"Content-Length": str(len(body)), "Content-Type": "application/json", **(headers or {})}
    lines += [f"{k}: {v}" for k, v in given.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def still_serving(server: ServerProcess) -> None:
    assert server.process.poll() is None, server.log()
    assert server.request("GET", "/readyz") == (200, {"status": "ready"})
    status, body = server.request("POST", PREDICT, raw=VALID)
    assert status == 200 and len(body["classes"]) == 1, body


# ---- random bodies -----------------------------------------------------------------------------------
def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1e308, -1e-320, 3.5, 10**400])
    if kind == 2:
        return rng.choice(["", "x", "名前", "\u0000", "a" * 1000, "NaN"])
    if kind == 3:
        return [rng.random() for _ in range(rng.choice([0, 1, FEATURES - 1, FEATURES + 1, 1000]))]
    if kind == 4:
        return {"instances": rng.choice([None, [], {}, "rows", [[]], [None], [[0.1] * FEATURES, [0.2]]])}
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["instances", "inputs", "requestId", "labels", ""]): random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def random_bodies(rng: random.Random) -> Iterator[bytes]:
    for _ in range(120):
        yield json.dumps(random_json(rng)).encode()
    for _ in range(40):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
    rows = [[rng.random() for _ in range(FEATURES)] for _ in range(3)]
    yield json.dumps({"instances": [r[:-1] for r in rows]}).encode()  # one feature short
    yield json.dumps({"instances": [[*r, 0.0] for r in rows]}).encode()  # one too many
    yield json.dumps({"instances": [[rows[0]]]}).encode()  # a row wrapped once more
    yield json.dumps({"instances": [[[0.0] * 2] * FEATURES]}).encode()
    yield json.dumps({"instances": [[0.0] * FEATURES] * 1025}).encode()  # over max instances
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" + b"0" * 5000, b"1" + b"0" * 400):
        yield b'{"instances": [[' + b", ".join([token] * FEATURES) + b"]]}"
    for depth in (40, 64, 200, 5000, 100_000):
        yield b'{"instances": ' + b"[" * depth + b"0" + b"]" * depth + b"}"
        yield b"[" * depth
        yield b'{"a":' * depth + b"1" + b"}" * depth
    yield b'{"instances": [[0.5]], "instances": "dup"}'
    yield '{"instances": [["\ud800"]]}'.encode("utf-8", "surrogatepass")


def test_random_bodies_get_4xx(server: ServerProcess) -> None:
    rng = random.Random(7)
    seen: dict[int, int] = {}
    for index, body in enumerate(random_bodies(rng)):
        for path in (PREDICT, f"/v1/models/{NAME}:feedback"):
            status, answer = server.request("POST", path, raw=body)
            assert status in CLIENT_ERRORS, (status, answer, body[:200])
            assert isinstance(answer, dict) and answer.get("error"), answer
            seen[status] = seen.get(status, 0) + 1
        if index % 25 == 0:
            still_serving(server)
    assert set(seen) <= {400, 404}
    still_serving(server)


# ---- headers and sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    (request("POST", PREDICT, VALID, {"Content-Type": "text/plain"}), 200),  # JSON is JSON, as in TF Serving
    (request("POST", PREDICT, VALID, {"Content-Type": "\x00\xff; charset=nonsense"}), 200),
    (request("POST", PREDICT, b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}), 400),
    (request("POST", PREDICT, VALID, {"Content-Length": "abc"}), 400),
    (request("POST", PREDICT, VALID, {"Content-Length": "-1"}), 400),
    (request("POST", PREDICT, VALID, {"Content-Length": "²"}), 400),  # a digit to str.isdigit, not to int
    (request("POST", PREDICT, VALID, {"Content-Length": "1e3"}), 400),
    (request("POST", PREDICT, VALID, {"Content-Length": "9" * 5000}), 413),
    (request("POST", PREDICT, VALID, {"Content-Length": str(100 * 2**20)}), 413),  # claimed, never sent
    (request("POST", PREDICT, VALID, {"Content-Length": "0" * 30 + str(len(VALID))}), 200),
    (request("POST", PREDICT, VALID, {"Content-Length": None}), 411),
    (request("POST", PREDICT, b"", {"Content-Length": "0"}), 400),
    (request("POST", PREDICT, b"5\r\n{}\r\n0\r\n\r\n", {"Content-Length": None, "Transfer-Encoding": "chunked"}),
     411),
    (request("POST", PREDICT, VALID, {"Transfer-Encoding": "chunked"}), 411),
    (request("POST", PREDICT, VALID, {"Transfer-Encoding": "gzip, chunked, nonsense"}), 411),
    (request("POST", PREDICT, VALID) .replace(b"\r\n\r\n", f"\r\nContent-Length: {len(VALID) + 5}\r\n\r\n".encode(), 1),
     400),  # two Content-Lengths that disagree
    (request("POST", PREDICT, VALID, {"X-Big": "h" * 70_000}), 431),
    (request("POST", PREDICT, VALID, {f"X-{i}": "v" for i in range(150)}), 431),
    (request("POST", "/" + "p" * 70_000, VALID), 414),
    (request("BREW", PREDICT, VALID), 405),
    (request("PATCH", PREDICT, VALID), 405),
    (request("OPTIONS", "*"), 404),
    (request("GET", "/readyz", b"", {"Content-Length": None, "Expect": "100-continue"}), 200),
    # http.server answers an HTTP version it does not speak in HTTP/0.9 style, with no status line.
    (b"GET /readyz HTTP/9.9\r\n\r\n", None),
    (b"GET /readyz HTTP/1.1\r\nbroken header line\r\n\r\n", 200),
    (b"\r\n\r\n", None),  # no request line: closed without an answer
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), None),  # a TLS hello, no line end: cut off
])
def test_hostile_headers_and_sizes(server: ServerProcess, raw: bytes, expected: int | None) -> None:
    assert exchange(server, raw) == expected
    still_serving(server)


def test_head_answers_without_a_body(server: ServerProcess) -> None:
    with socket.create_connection(address(server), timeout=30) as sock:
        sock.sendall(request("HEAD", "/readyz"))
        response = http.client.HTTPResponse(sock, method="HEAD")
        response.begin()
        assert response.status == 200 and response.read() == b""


def test_real_bodies_of_one_and_nine_mebibytes(server: ServerProcess) -> None:
    row = [0.25] * FEATURES
    one_mib = json.dumps({"instances": [row] * 1024, "pad": "x" * (2**20 - 200_000)}).encode()
    assert len(one_mib) > 2**20
    status, body = server.request("POST", PREDICT, raw=one_mib)
    assert status == 200 and len(body["classes"]) == 1024
    nine_mib = request("POST", PREDICT, b" " * (9 * 2**20))
    assert exchange(server, nine_mib[:nine_mib.index(b"\r\n\r\n") + 4 + 2**16]) == 413
    assert server.request("POST", PREDICT, raw=b"[" * (8 * 2**20 - 1))[0] == 400
    still_serving(server)


# ---- slow clients ------------------------------------------------------------------------------------
def test_headers_then_silence_gets_408_while_others_are_served(server: ServerProcess) -> None:
    stalled = [socket.create_connection(address(server), timeout=30) for _ in range(20)]
    for sock in stalled:  # the headers promise a body that never comes
        sock.sendall(request("POST", PREDICT, b"", {"Content-Length": str(len(VALID))}))
    still_serving(server)  # the stalled threads do not hold up anyone else
    assert [_status(sock) for sock in stalled] == [408] * len(stalled)
    for sock in stalled:
        sock.close()
    still_serving(server)


def test_half_sent_headers_are_cut_off(server: ServerProcess) -> None:
    with socket.create_connection(address(server), timeout=30) as sock:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert _status(sock) is None  # closed without an answer: nothing could be parsed
    still_serving(server)


def _trickle(server: ServerProcess, raw: bytes, pause_s: float) -> int | None:
    """Send one byte at a time until the server answers; its status, or None if it just closed."""
    with socket.create_connection(address(server), timeout=30) as sock:
        for byte in raw:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed): stop sending and read
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(pause_s)
        return _status(sock)


def test_a_body_sent_byte_by_byte_gets_408(server: ServerProcess) -> None:
    # Each byte comes well within the read timeout, but the whole body does not come within it.
    raw = request("POST", PREDICT, VALID)
    header_end = raw.index(b"\r\n\r\n") + 4
    with socket.create_connection(address(server), timeout=30) as sock:
        sock.sendall(raw[:header_end])
        answered: list[int | None] = []
        reader = threading.Thread(target=lambda: answered.append(_status(sock)))
        reader.start()
        for byte in raw[header_end:]:
            if answered or not reader.is_alive():
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(READ_TIMEOUT_S / 10)
        reader.join(30)
    assert answered == [408]
    still_serving(server)


def test_slow_headers_a_byte_at_a_time_end_closed_or_answered(server: ServerProcess) -> None:
    status = _trickle(server, request("GET", "/readyz"), 0.01)
    assert status in (200, 408, None)
    still_serving(server)


def test_a_slow_but_steady_body_within_the_timeout_is_served(server: ServerProcess) -> None:
    raw = request("POST", PREDICT, VALID)
    with socket.create_connection(address(server), timeout=30) as sock:
        for start in range(0, len(raw), len(raw) // 4 + 1):
            sock.sendall(raw[start:start + len(raw) // 4 + 1])
            time.sleep(READ_TIMEOUT_S / 20)
        assert _status(sock) == 200


def test_no_request_was_answered_5xx(server: ServerProcess) -> None:
    _, text = server.request("GET", "/metrics")
    lines = [line for line in text.splitlines() if line.startswith("modelserver_requests_total")]
    fives = [line for line in lines if 'code="5' in line and not line.endswith(" 0.0")]
    assert lines and not fives, fives
    still_serving(server)
