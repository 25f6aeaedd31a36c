"""Scripted stand-ins the operator talks to over real HTTP: Prometheus answers and trainer results."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from modelrelease_local.outcomes import JobOutcome

_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*")
_TRACK = re.compile(r'track="(canary|stable)"')


class FakePrometheus:
    """Answers /api/v1/query from a table: metric name -> track -> value (None: no series).

    The operator's real provider talks to it over HTTP, so query rendering, HTTP handling and
    result classification all run for real; only the numbers are scripted.
    """

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float | None]] = {}
        self.queries: list[str] = []
        self.down = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set(self, metric: str, canary: float | None, stable: float | None = None) -> None:
        self.values[metric] = {"canary": canary, "stable": stable}

    def answer(self, query: str) -> tuple[int, dict[str, Any]]:
        self.queries.append(query)
        if self.down:
            return 503, {"status": "error", "errorType": "unavailable", "error": "scripted outage"}
        metric = _METRIC.match(query.strip())
        track = _TRACK.search(query)
        value = None
        if metric and track:
            value = self.values.get(metric.group(0), {}).get(track.group(1))
        result = [] if value is None else [{"metric": {}, "value": [time.time(), repr(float(value))]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = parse_qs(urlparse(self.path).query)
                status, body = fake.answer(params.get("query", [""])[0])
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


def trainer_result(job: dict[str, Any], accuracy: float) -> str:
    """What the real trainer writes to its termination log, for a scripted Job."""
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    digest = hashlib.sha256(f"{job['metadata']['name']}/{accuracy}".encode()).hexdigest()
    return json.dumps({
        "schemaVersion": 1, "ok": True, "stage": flags["--stage"], "version": f"sha256:{digest}",
        "artifactPath": flags["--output"], "dataSource": flags["--data"], "initFrom": flags.get("--init-from"),
        "trainedAt": "2026-11-28T12:00:00Z", "error": None,
        "metrics": {"accuracy": accuracy, "precision": accuracy, "recall": accuracy, "f1": accuracy,
                    "loss": round(1 - accuracy, 4), "samples": 360, "trainSamples": 1000},
    })


class TrainingScript:
    """Per-stage outcomes for the scripted Job executor; unlisted stages train to accuracy 0.95."""

    def __init__(self) -> None:
        self.accuracy: dict[str, float] = {}
        self.failures: dict[str, JobOutcome] = {}
        self.delay = 0.5

    def __call__(self, job: dict[str, Any]) -> JobOutcome:
        stage = job["metadata"]["labels"]["modelrelease.io/stage"]
        if stage in self.failures:
            return self.failures[stage]
        return JobOutcome.succeeded(trainer_result(job, self.accuracy.get(stage, 0.95)), delay=self.delay)
