"""A small TensorFlow-Serving-compatible REST server for a trained model, with Prometheus metrics.

Routes: POST /v1/models/<name>:predict, POST /v1/models/<name>:feedback, GET /v1/models/<name>,
GET /healthz, GET /readyz, GET /metrics. Client mistakes get 4xx with {"error": ...}; 5xx means the
server (or its fault injection) failed. Bodies need a Content-Length (411 without) of at most 8 MiB
(413); a client that leaves the server waiting longer than READ_TIMEOUT_SECONDS (default 30) for a read
or for its whole body gets 408 or a closed connection.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelrelease_trainer import exit_codes
from modelrelease_trainer.exit_codes import TrainerError
from modelrelease_trainer.serving import (
    ModelHolder,
    PredictionLog,
    ServerConfig,
    ServerMetrics,
    artifact_version,
    resolve_config,
)

log = logging.getLogger(__name__)
_MODEL_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?::(?P<verb>predict|feedback))?$")
# ASCII digits only: str.isdigit() also takes "²", which int() refuses.
_CONTENT_LENGTH = re.compile(r"[0-9]+")


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 drops the handshakes of a burst of clients; they retransmit after
    # back-off, which can outlast the read timeout, and are then cut off without an answer.
    request_queue_size = 128

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        version = config.version or artifact_version(config.model_path)
        self.version_from_weights = version is None
        self.metrics = ServerMetrics(config.name, version or "unknown", config.track)
        self.holder = ModelHolder(config.model_path)
        self.predictions = PredictionLog(config.feedback_cache_size)
        self.faults = random.Random(config.inject_seed)
        super().__init__((config.host, config.port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or stalls while we answer is its own loss, not the server's failure.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection from %s dropped: %s", client_address, sys.exc_info()[1])
            return
        super().handle_error(request, client_address)

    @property
    def version(self) -> str:
        return self.metrics.labels["version"]

    def load_model(self) -> None:
        """Runs in a thread; on failure the server stops and the process exits with DATA_ERROR."""
        try:
            self.holder.load(compute_version=self.version_from_weights)
        except Exception as exc:
            self.holder.failed = str(exc)
            log.error("cannot load the model: %s", exc)
            threading.Thread(target=self.shutdown, daemon=True).start()
            return
        if self.holder.computed_version:
            self.metrics.labels["version"] = self.holder.computed_version
            self.metrics.initialise()
        log.info("model %s version %s ready", self.config.name, self.version)


class Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's delayed ACK would
    # hold the second one back about 40 ms on every keep-alive request.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        # Bounds every read, so a client that stalls (or idles on keep-alive) frees its thread;
        # http.server closes a connection whose request line or headers time out.
        super().setup()
        self.connection.settimeout(self.server.config.read_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server answers a method it has no do_ method for with 501; the client chose the method.
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command!r} is not served here"
        super().send_error(code, message, explain)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:  # answered 405 in JSON rather than the base class's 501 page
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def do_HEAD(self) -> None:  # the answer GET would give, less its body
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        self._head = method == "HEAD"
        method = "GET" if self._head else method
        # An unread body would be taken for the next request on this connection; see _send.
        self._body_unread = (
            self.headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in self.headers
        )
        path = self.path.split("?", 1)[0]
        match = _MODEL_ROUTE.match(path)
        if match and match["verb"] == "predict":
            self._timed_predict(method, match["name"])
            return
        try:
            if path in ("/healthz", "/readyz", "/metrics"):
                self._require(method, "GET")
                self._probe(path)
            elif match:
                self._require(method, "POST" if match["verb"] else "GET")
                self._check_name(match["name"])
                if match["verb"] == "feedback":
                    self._send_json(200, self._feedback())
                else:
                    self._send_json(200, self._status())
            else:
                raise ClientError(404, f"no route {method} {path}; see /v1/models/<name>:predict")
        except ClientError as exc:
            self._send_json(exc.status, {"error": str(exc)})
        except Exception:
            log.exception("request failed")
            self._send_json(500, {"error": "internal server error"})

    def _timed_predict(self, method: str, name: str) -> None:
        started = time.perf_counter()
        try:
            self._require(method, "POST")
            self._check_name(name)
            status, body = 200, self._predict()
        except ClientError as exc:
            status, body = exc.status, {"error": str(exc)}
        except Exception:
            log.exception("predict failed")
            status, body = 500, {"error": "internal server error"}
        self._send_json(status, body)
        self.server.metrics.record_predict(status, time.perf_counter() - started)

    def _probe(self, path: str) -> None:
        if path == "/healthz":
            self._send_json(200, {"status": "ok"})
        elif path == "/readyz":
            ready = self.server.holder.ready.is_set()
            self._send_json(200 if ready else 503, {"status": "ready" if ready else "loading"})
        else:
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)

    def _predict(self) -> dict[str, Any]:
        config = self.server.config
        body = self._read_json()  # read first: the connection stays usable whatever we answer
        if config.inject_latency_ms > 0:
            time.sleep(config.inject_latency_ms / 1000.0)
        if config.inject_error_rate > 0 and self.server.faults.random() < config.inject_error_rate:
            raise ClientError(500, "injected fault (--inject-error-rate)")
        holder = self.server.holder
        if not holder.ready.is_set():
            raise ClientError(503, "the model is still loading; retry when /readyz answers 200")
        instances = _instances(body, holder.num_features, config.max_instances)
        probabilities = holder.predict(instances)
        classes = probabilities.argmax(axis=1).tolist()
        self.server.metrics.record_confidence(probabilities.max(axis=1))
        request_id = str(uuid.uuid4())
        self.server.predictions.add(request_id, classes)
        return {
            "predictions": probabilities.tolist(),
            "classes": classes,
            "requestId": request_id,
            "modelVersion": self.server.version,
        }

    def _feedback(self) -> dict[str, Any]:
        body = self._read_json()
        request_id, labels = body.get("requestId"), body.get("labels")
        if not isinstance(request_id, str) or not request_id:
            raise ClientError(400, 'feedback needs "requestId": the id a predict answer carried')
        if not isinstance(labels, list) or not all(type(v) is int for v in labels):
            raise ClientError(400, 'feedback needs "labels": a list of integer classes, one per instance')
        predicted = self.server.predictions.get(request_id)
        if predicted is None:
            raise ClientError(404, f"unknown requestId {request_id!r} (too old, never seen, or already scored)")
        if len(labels) != len(predicted):
            raise ClientError(400, f"{len(labels)} labels for a prediction of {len(predicted)} instances")
        if self.server.predictions.take(request_id) is None:  # a concurrent feedback scored it first
            raise ClientError(404, f"requestId {request_id!r} was already scored")
        correct = sum(int(p == t) for p, t in zip(predicted, labels, strict=True))
        self.server.metrics.record_feedback(correct, len(labels) - correct)
        return {"requestId": request_id, "correct": correct, "incorrect": len(labels) - correct}

    def _status(self) -> dict[str, Any]:
        holder = self.server.holder
        state = "AVAILABLE" if holder.ready.is_set() else ("END" if holder.failed else "LOADING")
        return {
            "model_version_status": [{
                "version": self.server.version,
                "state": state,
                "status": {"error_code": "UNKNOWN" if holder.failed else "OK", "error_message": holder.failed or ""},
            }],
            "name": self.server.config.name,
            "track": self.server.config.track,
        }

    def _check_name(self, name: str) -> None:
        if name != self.server.config.name:
            raise ClientError(404, f"unknown model {name!r}; this server serves {self.server.config.name!r}")

    def _require(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise ClientError(405, f"use {allowed} here")

    def _read_json(self) -> dict[str, Any]:
        raw = self._read_body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClientError(400, f"body is not valid JSON: {exc}") from None
        except RecursionError:  # the decoder's guard against deep nesting, not a server fault
            raise ClientError(400, "body is nested too deeply; send a JSON object of rows of numbers") from None
        if not isinstance(body, dict):
            raise ClientError(400, "body must be a JSON object")
        return body

    def _read_body(self) -> bytes:
        """The body, by its Content-Length; until it is read whole the connection closes after answering."""
        limit = self.server.config.max_body_bytes
        if "Transfer-Encoding" in self.headers:
            raise ClientError(411, "chunked or other transfer encodings are not accepted; send Content-Length")
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not lengths:
            raise ClientError(411, "a JSON body with a Content-Length header is required")
        if len(lengths) > 1 or not _CONTENT_LENGTH.fullmatch(next(iter(lengths))):
            raise ClientError(400, f"Content-Length must be one number of bytes, got {sorted(lengths)}")
        length_text = next(iter(lengths)).lstrip("0") or "0"
        if len(length_text) > len(str(limit)) or int(length_text) > limit:
            raise ClientError(413, f"body of {length_text[:40]} bytes is over the limit of {limit}")
        length = int(length_text)
        # A per-read timeout alone lets a client that sends a byte at a time hold the thread for ever.
        deadline = time.monotonic() + self.server.config.read_timeout_s
        chunks: list[bytes] = []
        received = 0
        try:
            while received < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length - received)
                if not chunk:
                    raise ClientError(400, f"the body ended after {received} of its {length} bytes")
                chunks.append(chunk)
                received += len(chunk)
        except TimeoutError:
            self.close_connection = True
            raise ClientError(408, f"the body did not arrive within {self.server.config.read_timeout_s:g} s "
                                   f"({received} of {length} bytes)") from None
        finally:
            self.connection.settimeout(self.server.config.read_timeout_s)
        self._body_unread = False
        return b"".join(chunks)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self._body_unread or self.close_connection:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if not self._head:
            self.wfile.write(payload)


def _instances(body: dict[str, Any], features: int, limit: int) -> np.ndarray:
    rows = body.get("instances")
    hint = f'"instances": a list of rows of {features} numbers'
    if not isinstance(rows, list) or not rows:
        raise ClientError(400, f"body needs {hint}")
    if len(rows) > limit:
        raise ClientError(400, f"{len(rows)} instances is over the limit of {limit} per request")
    try:
        array = np.asarray(rows)
    except ValueError:  # ragged rows, or nested deeper than an array may be
        raise ClientError(400, f"rows differ in length; send {hint}") from None
    except (RecursionError, OverflowError, TypeError):
        raise ClientError(400, f"instances are not rows of numbers; send {hint}") from None
    if array.dtype.kind not in "iuf":  # rejects strings, booleans, nested objects and nulls
        raise ClientError(400, f"instances must hold numbers only; send {hint}")
    if array.ndim != 2 or array.shape[1] != features:
        raise ClientError(400, f"instances have shape {list(array.shape)}; send {hint}")
    features_32 = array.astype(np.float32)
    if not np.all(np.isfinite(features_32)):  # after the cast: 1e300 is finite, but not as float32
        raise ClientError(400, "instances contain NaN, infinity or numbers too large for float32")
    return features_32


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        server = ModelServer(config)
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return exit_codes.TRANSIENT
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving model {config.name} (track {config.track}) on http://{host}:{port}", flush=True)
    # shutdown() waits for serve_forever() to return, so it must not run in the signal handler's thread.
    previous = signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    threading.Thread(target=server.load_model, name="model-loader", daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    if server.holder.failed:
        print(f"error: {server.holder.failed}", file=sys.stderr)
        return exit_codes.DATA_ERROR
    return exit_codes.OK
