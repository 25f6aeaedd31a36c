"""The load generator splits requests like a Service and sends real digits with feedback."""
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelrelease_local.runner import EndpointKey
from modelrelease_local.traffic import TrafficGenerator, digits_samples, pick_endpoint
from tests.waiting import wait_for

STABLE = EndpointKey('default', 'digits', 'stable', 'sha256:aa', 'digits')
CANARY = EndpointKey('default', 'digits', 'canary', 'sha256:bb', 'digits')
OTHER = EndpointKey('default', 'other', 'stable', 'sha256:cc', 'other')


class FakeServer(ThreadingHTTPServer):
    """Answers predict and feedback the way the reference server does, and remembers what it got."""

    daemon_threads = True

    def __init__(self, fail: bool = False) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.fail = fail
        self.instances: list[list[float]] = []
        self.feedback: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True  # keep-alive answers go out at once, not after the client's delayed ACK

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        with self.server.lock:
            self.server.paths.append(self.path)
            if self.path.endswith(':predict'):
                self.server.instances.extend(body['instances'])
            else:
                self.server.feedback.append(body)
        if self.server.fail:
            return self._send(500, {'error': 'injected'})
        answer = {'requestId': f'r{random.random()}', 'classes': [0]} if self.path.endswith(':predict') else {}
        self._send(200, answer)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    started = [FakeServer() for _ in range(4)] + [FakeServer(fail=True)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in started]
    for thread in threads:
        thread.start()
    try:
        yield started
    finally:
        for server in started:
            server.shutdown()
            server.server_close()


def test_picks_follow_ready_replicas_per_track() -> None:
    endpoints = {STABLE: [1001, 1002, 1003], CANARY: [2001]}
    rng = random.Random(7)
    picks = [pick_endpoint(endpoints, rng) for _ in range(8000)]
    canary_share = sum(1 for key, _ in picks if key.track == 'canary') / len(picks)  # type: ignore[misc]
    assert 0.22 < canary_share < 0.28
    assert {port for _, port in picks} == {1001, 1002, 1003, 2001}  # type: ignore[misc]
    assert pick_endpoint({}, rng) is None


def test_samples_are_the_trainers_held_out_digits() -> None:
    features, labels = digits_samples()
    assert features.shape == (len(labels), 64) and 300 < len(labels) < 400
    assert features.min() >= 0 and features.max() <= 16  # raw pixel counts: the model rescales
    assert set(labels.tolist()) == set(range(10))


def test_requests_split_and_feedback(servers: list[FakeServer]) -> None:
    stable, canary = servers[:3], servers[3]
    endpoints = {STABLE: [s.port for s in stable], CANARY: [canary.port]}
    generator = TrafficGenerator(lambda: endpoints, rate=400.0, feedback_share=0.5, seed=3)
    with generator:
        wait_for(lambda: sum(generator.stats.requests.values()) >= 1200, message='1200 requests')
    assert generator._thread is None  # stopped and joined

    predicts = {s.port: sum(p.endswith(':predict') for p in s.paths) for s in servers[:4]}
    total = sum(predicts.values())
    assert 0.18 < predicts[canary.port] / total < 0.32
    assert all(path.startswith('/v1/models/digits:') for s in servers[:4] for path in s.paths)
    instances = [row for s in servers[:4] for row in s.instances]
    assert all(len(row) == 64 for row in instances)
    feedback = [f for s in servers[:4] for f in s.feedback]
    assert 0.4 < len(feedback) / total < 0.6
    assert all(len(f['labels']) == 1 and 0 <= f['labels'][0] <= 9 for f in feedback)
    assert generator.stats.feedback[('digits', 'canary')] > 0


def test_each_release_gets_its_own_rate_and_errors_are_counted(servers: list[FakeServer]) -> None:
    failing = servers[4]
    endpoints = {STABLE: [servers[0].port], OTHER: [failing.port]}
    generator = TrafficGenerator(lambda: endpoints, rate=200.0, feedback_share=1.0)
    with generator:
        wait_for(lambda: generator.stats.requests.get(('other', 'stable'), 0) >= 100, message='100 requests')
    ok = generator.stats.requests[('digits', 'stable')]
    assert abs(ok - generator.stats.requests[('other', 'stable')]) <= 2
    assert generator.stats.errors[('other', 'stable')] == generator.stats.requests[('other', 'stable')]
    assert not failing.feedback  # no requestId, no feedback
    assert all(p.endswith(':predict') for p in failing.paths)
    assert failing.paths[0] == '/v1/models/other:predict'
