"""The request log (for write-economy tests) and the fault injection hook."""
import json

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from tests.local.conftest import deployment_body

GROUP, VERSION, PLURAL = 'example.com', 'v1', 'widgets'


def test_the_request_log_records_and_counts(server: EmbeddedApiServer, core: kubernetes.client.CoreV1Api) -> None:
    server.requests.reset()
    core.create_namespaced_config_map('ml', {'metadata': {'name': 'c'}})
    core.patch_namespaced_config_map('c', 'ml', {'data': {'a': '1'}})
    core.read_namespaced_config_map('c', 'ml')
    core.list_namespaced_config_map('ml', label_selector='x=y')
    with pytest.raises(kubernetes.client.ApiException):
        core.read_namespaced_config_map('missing', 'ml')

    records = server.requests.snapshot()
    assert [(r.method, r.path, r.status) for r in records] == [
        ('POST', '/api/v1/namespaces/ml/configmaps', 201),
        ('PATCH', '/api/v1/namespaces/ml/configmaps/c', 200),
        ('GET', '/api/v1/namespaces/ml/configmaps/c', 200),
        ('GET', '/api/v1/namespaces/ml/configmaps', 200),
        ('GET', '/api/v1/namespaces/ml/configmaps/missing', 404),
    ]
    assert records[1].content_type == 'application/strategic-merge-patch+json'
    assert records[1].body == {'data': {'a': '1'}}
    assert records[3].query == {'labelSelector': 'x=y'}
    assert [r.method for r in server.requests.writes()] == ['POST', 'PATCH']
    assert server.requests.count('PATCH') == 1
    assert server.requests.count(path_suffix='/configmaps/c') == 2
    assert server.requests.count(path_contains='/configmaps', writes_only=True) == 2

    server.requests.reset()
    assert len(server.requests) == 0


def test_a_fault_answers_the_next_matching_request(server: EmbeddedApiServer, widgets_crd: object,
                                                   custom: kubernetes.client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, {
        'apiVersion': 'example.com/v1', 'kind': 'Widget', 'metadata': {'name': 'w'}, 'spec': {}})
    fault = server.fail_next('PATCH', '/status', status=409)

    # Not matching: served normally, the fault stays armed.
    custom.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w', {'spec': {'size': 1}})
    assert fault.hits == 0

    with pytest.raises(kubernetes.client.ApiException) as info:
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, 'ml', PLURAL, 'w', {'status': {'phase': 'A'}})
    assert info.value.status == 409
    body = json.loads(info.value.body)
    assert body['kind'] == 'Status' and body['reason'] == 'Conflict' and body['code'] == 409
    assert fault.hits == 1

    # Only once: the retry goes through, and the store never saw the failed write.
    assert 'status' not in custom.get_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w')
    patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, 'ml', PLURAL, 'w',
                                                           {'status': {'phase': 'B'}})
    assert patched['status'] == {'phase': 'B'}

    status_patches = server.requests.filter('PATCH', path_suffix='/status')
    assert [(r.status, r.injected) for r in status_patches] == [(409, True), (200, False)]


def test_faults_that_persist_until_cleared(server: EmbeddedApiServer, apps: kubernetes.client.AppsV1Api) -> None:
    fault = server.fail_next('POST', path_contains='/deployments', status=503, times=None, message='maintenance')
    for _ in range(3):
        with pytest.raises(kubernetes.client.ApiException) as info:
            apps.create_namespaced_deployment('ml', deployment_body('srv'))
        assert info.value.status == 503
        assert json.loads(info.value.body)['message'] == 'maintenance'
    assert fault.hits == 3
    server.clear_faults()
    apps.create_namespaced_deployment('ml', deployment_body('srv'))
