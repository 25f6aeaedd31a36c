"""The HTTPRoute CRD: the embedded API defaults and refuses HTTPRoutes as a cluster with Gateway API v1.2 does."""
from typing import Any

import kubernetes
import pytest

from modelrelease_local.gateway_crd import GROUP, HTTPROUTE_PLURAL, VERSION, build_httproute_crd


def route_body(name: str = 'digits', rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'HTTPRoute', 'metadata': {'name': name},
        'spec': {'parentRefs': [{'name': 'gateway'}], 'rules': rules if rules is not None else [{
            'name': 'main',
            'backendRefs': [{'name': 'digits-stable', 'port': 80}, {'name': 'digits-canary', 'port': 80, 'weight': 0}],
        }]},
    }


@pytest.fixture
def routes(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    crd = build_httproute_crd()
    kubernetes.client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    return kubernetes.client.CustomObjectsApi(api_client)


def create(routes: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    created = routes.create_namespaced_custom_object(GROUP, VERSION, 'default', HTTPROUTE_PLURAL, body)
    return dict(created)  # type: ignore[call-overload]


def refused(routes: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> str:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        create(routes, body)
    assert caught.value.status == 422, caught.value.body
    return str(caught.value.body)


def test_defaults_are_the_gateway_apis(routes: kubernetes.client.CustomObjectsApi) -> None:
    created = create(routes, route_body(rules=[{
        'matches': [{'headers': [{'name': 'X-Canary', 'value': 'always'}]}],
        'backendRefs': [{'name': 'digits-canary', 'port': 80}],
    }]))
    rule = created['spec']['rules'][0]
    assert rule['backendRefs'][0] == {'name': 'digits-canary', 'port': 80, 'weight': 1, 'group': '', 'kind': 'Service'}
    assert rule['matches'][0]['headers'][0]['type'] == 'Exact'
    assert rule['matches'][0]['path'] == {'type': 'PathPrefix', 'value': '/'}
    assert created['spec']['parentRefs'][0] == {'name': 'gateway', 'group': GROUP, 'kind': 'Gateway'}
    no_rules = create(routes, {**route_body('empty'), 'spec': {'parentRefs': [{'name': 'gateway'}]}})
    assert no_rules['spec']['rules'] == [{'matches': [{'path': {'type': 'PathPrefix', 'value': '/'}}]}]


def test_weights_ports_and_mirror_percent_are_bounded(routes: kubernetes.client.CustomObjectsApi) -> None:
    too_heavy = route_body(rules=[{'backendRefs': [{'name': 'digits-stable', 'port': 80, 'weight': 1_000_001}]}])
    assert 'weight' in refused(routes, too_heavy)
    assert 'port' in refused(routes, route_body(rules=[{'backendRefs': [{'name': 'digits-stable', 'port': 0}]}]))
    mirror = {'type': 'RequestMirror', 'requestMirror': {'backendRef': {'name': 'digits-canary', 'port': 80},
                                                         'percent': 101}}
    assert 'percent' in refused(routes, route_body(rules=[{'filters': [mirror]}]))
    mirror['requestMirror'] = {'backendRef': {'name': 'digits-canary', 'port': 80}, 'percent': 10,
                               'fraction': {'numerator': 1}}
    assert 'Only one of percent or fraction' in refused(routes, route_body(rules=[{'filters': [mirror]}]))
    create(routes, route_body(rules=[{'filters': [{'type': 'RequestMirror', 'requestMirror': {
        'backendRef': {'name': 'digits-canary', 'port': 80}, 'fraction': {'numerator': 1}}}]}]))


def test_malformed_rules_are_refused(routes: kubernetes.client.CustomObjectsApi) -> None:
    bad_header = route_body(rules=[{'matches': [{'headers': [{'name': 'X Canary', 'value': 'a'}]}]}])
    assert 'name' in refused(routes, bad_header)
    unknown_type = route_body(rules=[{'matches': [{'headers': [{'type': 'Prefix', 'name': 'x', 'value': 'a'}]}]}])
    assert 'Unsupported value' in refused(routes, unknown_type)
    twice = route_body(rules=[{'name': 'main'}, {'name': 'main'}])
    assert 'Rule name must be unique within the route' in refused(routes, twice)
    mirror_without_body = route_body(rules=[{'filters': [{'type': 'RequestMirror'}]}])
    assert 'filter.requestMirror must be specified' in refused(routes, mirror_without_body)
    no_port = route_body(rules=[{'backendRefs': [{'name': 'digits-stable'}]}])
    assert 'Must have port for Service reference' in refused(routes, no_port)
    assert 'rules' in refused(routes, route_body(rules=[{'name': f'r{i}'} for i in range(17)]))
