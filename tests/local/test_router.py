"""
The embedded gateway routes as the HTTPRoute says: exact weights (measured over a fixed number of
requests, within a stated number of binomial standard errors), header routes, mirrors whose answers
never reach the client, rule precedence; and the traffic generator follows a route patched through
the embedded API.
"""
import json
import math
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.gateway_crd import GROUP, HTTPROUTE_API_VERSION, HTTPROUTE_PLURAL, VERSION, build_httproute_crd
from modelrelease_local.router import Router, route_for_release
from modelrelease_local.runner import EndpointKey
from modelrelease_local.traffic import TrafficGenerator
from tests.waiting import wait_for

STABLE = EndpointKey('default', 'digits', 'stable', 'sha256:aa', 'digits')
CANARY = EndpointKey('default', 'digits', 'canary', 'sha256:bb', 'digits')
REQUESTS = 4000
TOLERANCE_SE = 4.5  # a seeded run; 4.5 standard errors leave a true router's share inside by a wide margin


def backend(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {'name': name, 'port': 80}
    if weight is not None:
        ref['weight'] = weight
    return ref


def weighted_rule(canary_weight: int) -> dict[str, Any]:
    return {'name': 'main', 'backendRefs': [backend('digits-stable', 100 - canary_weight),
                                            backend('digits-canary', canary_weight)]}


def header_rule(name: str = 'x-canary', value: str = 'always', kind: str = 'Exact') -> dict[str, Any]:
    return {'name': 'digits-canary-header', 'matches': [{'headers': [{'type': kind, 'name': name, 'value': value}]}],
            'backendRefs': [backend('digits-canary')]}


def httproute(*rules: dict[str, Any], name: str = 'digits') -> dict[str, Any]:
    return {'apiVersion': HTTPROUTE_API_VERSION, 'kind': 'HTTPRoute',
            'metadata': {'name': name, 'namespace': 'default'},
            'spec': {'parentRefs': [{'name': 'gateway'}], 'rules': list(rules)}}


def within_standard_errors(hits: int, total: int, expected: float) -> None:
    share = hits / total
    if expected in (0.0, 1.0):
        assert share == expected, f'{hits}/{total}: expected exactly {expected:.0%}'
        return
    standard_error = math.sqrt(expected * (1 - expected) / total)
    assert abs(share - expected) <= TOLERANCE_SE * standard_error, (
        f'{hits}/{total} = {share:.4f}, expected {expected} ± {TOLERANCE_SE} x {standard_error:.4f}')


# --- The router alone: decisions over many requests ------------------------------------------------

@pytest.mark.parametrize('canary_weight', [0, 5, 20, 50, 100])
def test_the_canary_share_is_the_weight(canary_weight: int) -> None:
    router = Router(httproute(weighted_rule(canary_weight)), {STABLE: [1001, 1002, 1003], CANARY: [2001]})
    rng = random.Random(canary_weight)
    answered = [router.route({}, rng).answer_from for _ in range(REQUESTS)]
    assert all(endpoint is not None for endpoint in answered)
    canary = sum(1 for endpoint in answered if endpoint is not None and endpoint.key == CANARY)
    within_standard_errors(canary, REQUESTS, canary_weight / 100)  # not the canary's share of pods (1 in 4)
    stable_ports = {endpoint.port for endpoint in answered if endpoint is not None and endpoint.key == STABLE}
    assert stable_ports == ({1001, 1002, 1003} if canary_weight < 100 else set())


def test_a_missing_weight_is_one_and_no_backend_fails_with_500() -> None:
    endpoints = {STABLE: [1001], CANARY: [2001]}
    rng = random.Random(1)
    even = Router(httproute({'backendRefs': [backend('digits-stable'), backend('digits-canary')]}), endpoints)
    canary = sum(1 for _ in range(REQUESTS) if (e := even.route({}, rng).answer_from) is not None and e.key == CANARY)
    within_standard_errors(canary, REQUESTS, 0.5)
    all_zero = Router(httproute({'backendRefs': [backend('digits-stable', 0), backend('digits-canary', 0)]}), endpoints)
    decision = all_zero.route({}, rng)
    assert decision.answer_from is None and decision.failure == 500
    no_ready_canary = Router(httproute(weighted_rule(100)), {STABLE: [1001]}).route({}, rng)
    assert no_ready_canary.answer_from is None and no_ready_canary.failure == 503
    elsewhere = Router(httproute({'matches': [{'path': {'type': 'Exact', 'value': '/other'}}],
                                  'backendRefs': [backend('digits-stable')]}), endpoints)
    assert elsewhere.route({}, rng, path='/v1/models/digits:predict').failure == 404


def test_a_header_route_sends_exactly_the_requests_with_the_header() -> None:
    router = Router(httproute(header_rule(), weighted_rule(0)), {STABLE: [1001], CANARY: [2001]})
    rng = random.Random(2)
    for _ in range(500):
        with_header = router.route({'X-Canary': 'always'}, rng)  # header names compare case-insensitively
        assert with_header.answer_from is not None and with_header.answer_from.key == CANARY
        assert with_header.by_header and with_header.rule == 'digits-canary-header'
        for other in ({}, {'X-Canary': 'never'}, {'X-Canary': 'always-not'}):
            answer = router.route(other, rng).answer_from
            assert answer is not None and answer.key == STABLE


def test_a_regular_expression_header_must_match_the_whole_value() -> None:
    router = Router(httproute(header_rule(value='alw[a-z]+', kind='RegularExpression'), weighted_rule(0)),
                    {STABLE: [1001], CANARY: [2001]})
    rng = random.Random(3)
    assert (answer := router.route({'x-canary': 'always'}, rng).answer_from) is not None and answer.key == CANARY
    assert (answer := router.route({'x-canary': 'always!'}, rng).answer_from) is not None and answer.key == STABLE


def test_the_rule_with_more_header_matches_wins() -> None:
    one = {'name': 'one', 'matches': [{'headers': [{'name': 'X-Canary', 'value': 'always'}]}],
           'backendRefs': [backend('digits-stable')]}
    two = {'name': 'two', 'matches': [{'headers': [{'name': 'X-Canary', 'value': 'always'},
                                                   {'name': 'X-User', 'value': 'tester'}]}],
           'backendRefs': [backend('digits-canary')]}
    router = Router(httproute(one, two), {STABLE: [1001], CANARY: [2001]})
    rng = random.Random(4)
    assert router.route({'X-Canary': 'always', 'X-User': 'tester'}, rng).rule == 'two'  # though listed second
    assert router.route({'X-Canary': 'always'}, rng).rule == 'one'
    tied = Router(httproute(one, {**one, 'name': 'later'}), {STABLE: [1001]})
    assert tied.route({'X-Canary': 'always'}, rng).rule == 'one'  # a tie: the first in list order


def test_the_route_of_a_release_is_the_one_naming_its_services() -> None:
    other = httproute({'backendRefs': [backend('shop-stable')]}, name='shop')
    newer = httproute(weighted_rule(10), name='a-newer')
    newer['metadata']['creationTimestamp'] = '2026-01-02T00:00:00Z'
    older = httproute(weighted_rule(20), name='z-older')
    older['metadata']['creationTimestamp'] = '2026-01-01T00:00:00Z'
    mirror_only = httproute({'backendRefs': [backend('shop-stable')], 'filters': [
        {'type': 'RequestMirror', 'requestMirror': {'backendRef': backend('digits-canary')}}]}, name='mirror')
    assert route_for_release([other, newer, older], 'default', 'digits') is older
    assert route_for_release([other, mirror_only], 'default', 'digits') is mirror_only
    assert route_for_release([other], 'default', 'digits') is None
    assert route_for_release([older], 'elsewhere', 'digits') is None


# --- Through real servers: what the client got, and what the canary got ----------------------------

class NamedServer(ThreadingHTTPServer):
    """A model server stand-in that answers with its own name and remembers every request's headers."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.name = name
        self.predicts: list[dict[str, str]] = []
        self.feedback = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: NamedServer
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers['Content-Length']))
        with self.server.lock:
            if self.path.endswith(':predict'):
                self.server.predicts.append({name.lower(): value for name, value in self.headers.items()})
            else:
                self.server.feedback += 1
        data = json.dumps({'requestId': f'{self.server.name}-{random.random()}', 'server': self.server.name}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def named() -> Iterator[dict[str, NamedServer]]:
    servers = {'stable': NamedServer('stable'), 'canary': NamedServer('canary')}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


def endpoints_of(named: dict[str, NamedServer]) -> dict[EndpointKey, list[int]]:
    return {STABLE: [named['stable'].port], CANARY: [named['canary'].port]}


def test_mirrored_requests_reach_the_canary_but_never_answer_the_client(named: dict[str, NamedServer]) -> None:
    mirror = {'type': 'RequestMirror', 'requestMirror': {'backendRef': backend('digits-canary'), 'percent': 30}}
    route = httproute({**weighted_rule(0), 'filters': [mirror]})
    endpoints = endpoints_of(named)
    total = 2000
    generator = TrafficGenerator(lambda: endpoints, feedback_share=1.0, seed=5)  # not started: sent one by one
    try:
        exchanges = [generator.send_routed(route, endpoints, 'default', 'digits') for _ in range(total)]
    finally:
        generator.stop()
    assert all(exchange.status == 200 and exchange.body is not None and exchange.body['server'] == 'stable'
               for exchange in exchanges)
    mirrored = len(named['canary'].predicts)
    within_standard_errors(mirrored, total, 0.30)
    assert mirrored == sum(1 for exchange in exchanges if exchange.mirrored_to == (CANARY,))
    assert generator.stats.mirrored == {('digits', 'canary'): mirrored}
    assert generator.stats.ok == {('digits', 'stable'): total}  # a copy is not an answered request
    assert named['canary'].feedback == 0  # its answers were dropped: nothing to give feedback on
    assert named['stable'].feedback == total


def test_the_tester_header_reaches_the_canary_and_only_it_does(named: dict[str, NamedServer]) -> None:
    route = httproute(header_rule(), weighted_rule(0))
    endpoints = endpoints_of(named)
    total = 2000
    generator = TrafficGenerator(lambda: endpoints, tester_share=0.25, seed=6)
    try:
        exchanges = [generator.send_routed(route, endpoints, 'default', 'digits') for _ in range(total)]
    finally:
        generator.stop()
    canary, stable = named['canary'].predicts, named['stable'].predicts
    assert canary and all(headers.get('x-canary') == 'always' for headers in canary)
    assert stable and all('x-canary' not in headers for headers in stable)
    within_standard_errors(len(canary), total, 0.25)
    assert [e.body['server'] for e in exchanges if e.answered_by == CANARY] == ['canary'] * len(canary)  # type: ignore[index]
    assert generator.stats.header_routed == {('digits', 'canary'): len(canary)}


# --- Through the embedded API: the generator follows a patched route -------------------------------

def test_the_traffic_generator_follows_the_routes_weights(server: EmbeddedApiServer,
                                                          api_client: kubernetes.client.ApiClient,
                                                          named: dict[str, NamedServer]) -> None:
    crd = build_httproute_crd()
    kubernetes.client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    routes = kubernetes.client.CustomObjectsApi(api_client)
    routes.create_namespaced_custom_object(GROUP, VERSION, 'default', HTTPROUTE_PLURAL, httproute(weighted_rule(0)))
    endpoints = endpoints_of(named)
    generator = TrafficGenerator(lambda: endpoints, rate=300.0, feedback_share=0.0, route_refresh=0.2,
                                 routes=lambda: server.list_objects(HTTPROUTE_API_VERSION, HTTPROUTE_PLURAL))
    with generator:
        wait_for(lambda: generator.stats.requests.get(('digits', 'stable'), 0) >= 300, message='300 requests')
        assert ('digits', 'canary') not in generator.stats.requests  # weight 0, though it has half the pods
        routes.patch_namespaced_custom_object(GROUP, VERSION, 'default', HTTPROUTE_PLURAL, 'digits',
                                              {'spec': {'rules': [weighted_rule(100)]}})
        wait_for(lambda: generator.stats.requests.get(('digits', 'canary'), 0) >= 1, message='a canary request')
        stable_before = generator.stats.requests[('digits', 'stable')]
        wait_for(lambda: generator.stats.requests.get(('digits', 'canary'), 0) >= 300, message='300 canary requests')
        assert generator.stats.requests[('digits', 'stable')] == stable_before  # the new route, and only it
    assert len(named['canary'].predicts) == generator.stats.requests[('digits', 'canary')]
