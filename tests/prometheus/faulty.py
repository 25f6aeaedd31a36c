"""A Prometheus stand-in that misbehaves on purpose, over real HTTP, one script per query.

Each query is answered by the first route whose prefix it starts with (else the default), and a route
cycles through its answers one call after another, so a series can flip between present and absent
across runs. An ``Answer`` can be slow, trickle its body, declare more than it sends, reset the
connection mid-body, or be far larger than any real answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    """Seconds before the status line."""
    trickle: float = 0.0
    """Seconds between two body bytes."""
    declared_length: int | None = None
    """The Content-Length sent, when it is not the body's (a truncated answer declares more)."""
    filler: int = 0
    """Spaces streamed after the body, without a Content-Length (a huge answer)."""
    reset: bool = False
    """After the body, reset the connection (RST) instead of finishing the answer."""
    hang_up: bool = False
    """Close the connection (an orderly close) without sending anything."""


def json_answer(body: Any, status: int = 200, **options: Any) -> Answer:
    return Answer(status=status, body=json.dumps(body).encode(), **options)


def success(result_type: str, result: Any, **options: Any) -> Answer:
    return json_answer({"status": "success", "data": {"resultType": result_type, "result": result}}, **options)


def vector(*values: str | float, **options: Any) -> Answer:
    """One series per value; values are sent as Prometheus writes them, as strings."""
    series = [{"metric": {"pod": f"model-{i}"}, "value": [1_700_000_000.0, str(v)]} for i, v in enumerate(values)]
    return success("vector", series, **options)


def prometheus_error(status: int, error_type: str, error: str, **options: Any) -> Answer:
    return json_answer({"status": "error", "errorType": error_type, "error": error}, status=status, **options)


class FaultyPrometheus:
    """Answers /api/v1/query from routes: query prefix -> answers taken in turn."""

    def __init__(self, default: Answer | None = None) -> None:
        self.default = default or vector()
        self.queries: list[str] = []
        self._routes: list[tuple[str, Iterator[Answer]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a trickling answer must not hold the test's teardown
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route(self, prefix: str, *answers: Answer) -> None:
        """Queries starting with ``prefix`` get ``answers`` in turn, round and round."""
        with self._lock:
            self._routes = [(p, a) for p, a in self._routes if p != prefix]
            self._routes.append((prefix, itertools.cycle(answers)))

    def clear(self) -> None:
        with self._lock:
            self._routes = []

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultyPrometheus:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def answer_for(self, query: str) -> Answer:
        with self._lock:
            self.queries.append(query)
            for prefix, answers in self._routes:
                if query.startswith(prefix):
                    return next(answers)
            return self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        faulty = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                with contextlib.suppress(OSError):  # the client gave up (timeout, size bound), as it should
                    self._send(faulty.answer_for(query))

            def _send(self, answer: Answer) -> None:
                time.sleep(answer.delay)
                if answer.hang_up:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers:
                    self.send_header(name, value)
                if not answer.filler:
                    self.send_header("Content-Length", str(answer.declared_length or len(answer.body)))
                self.end_headers()
                if answer.trickle:
                    for byte in answer.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(answer.trickle)
                else:
                    self.wfile.write(answer.body)
                for _ in range(answer.filler // 65536):
                    self.wfile.write(b" " * 65536)
                self.wfile.flush()
                if answer.reset:
                    self._reset()
                elif answer.declared_length:
                    self.close_connection = True  # the rest never comes: the client sees a short body

            def _reset(self) -> None:
                # A zero linger makes close() send RST, as a crashing proxy or a killed process would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                socket.close(self.connection.detach())

            def finish(self) -> None:
                with contextlib.suppress(OSError):  # a reset connection has nothing left to flush
                    super().finish()

            def log_message(self, *_: Any) -> None:
                pass

        return Handler
