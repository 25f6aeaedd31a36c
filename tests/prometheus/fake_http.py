"""A stand-in Prometheus over real HTTP: a fixed answer to every GET, and a record of what was asked."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeServer:
    """Answers every request with a fixed status and body; remembers each request's headers, path and
    query parameters."""

    def __init__(self, body: dict[str, Any] | bytes | None = None) -> None:
        self.status = 200
        self.body: dict[str, Any] | bytes = body if body is not None else {
            "status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}
        self.headers: list[dict[str, str]] = []
        self.asked: list[tuple[str, dict[str, list[str]]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.headers.append(dict(self.headers))
                url = urlsplit(self.path)
                fake.asked.append((url.path, parse_qs(url.query)))
                payload = json.dumps(fake.body).encode() if isinstance(fake.body, dict) else fake.body
                self.send_response(fake.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
