"""Custom resources, discovery and the wire format, through the kubernetes client and raw HTTP."""
import json
import urllib.error
import urllib.request
from typing import Any

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from tests.local.conftest import WIDGETS_CRD

ApiException = kubernetes.client.ApiException
GROUP, VERSION, PLURAL = 'example.com', 'v1', 'widgets'


def _widget(name: str, size: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {'apiVersion': 'example.com/v1', 'kind': 'Widget',
            'metadata': {'name': name, 'labels': labels or {}}, 'spec': {'size': size}}


def _http(server: EmbeddedApiServer, method: str, path: str, body: bytes | None = None,
          content_type: str = 'application/json', accept: str = 'application/json') -> tuple[int, Any]:
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={'Content-Type': content_type, 'Accept': accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b'null')
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b'null')


@pytest.fixture
def widgets(custom: kubernetes.client.CustomObjectsApi, widgets_crd: Any) -> kubernetes.client.CustomObjectsApi:
    return custom


def test_crud_and_selectors(widgets: kubernetes.client.CustomObjectsApi) -> None:
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, _widget('a', labels={'k': 'x'}))
    widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, _widget('b', labels={'k': 'y'}))
    assert created['metadata']['generation'] == 1 and created['metadata']['uid']

    listed = widgets.list_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, label_selector='k=y')
    assert listed['kind'] == 'WidgetList' and listed['apiVersion'] == 'example.com/v1'
    assert [(w['kind'], w['metadata']['name']) for w in listed['items']] == [('Widget', 'b')]
    everywhere = widgets.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector='k in (x,y)')
    assert [w['metadata']['name'] for w in everywhere['items']] == ['a', 'b']

    patched = widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'a', {'spec': {'size': 2}})
    assert patched['spec'] == {'size': 2} and patched['metadata']['generation'] == 2

    widgets.delete_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'a')
    with pytest.raises(ApiException) as info:
        widgets.get_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'a')
    assert info.value.status == 404


def test_status_isolation_generation_and_no_op_writes(widgets: kubernetes.client.CustomObjectsApi) -> None:
    created = widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL,
                                                      {**_widget('w'), 'status': {'phase': 'ignored on create'}})
    assert 'status' not in created

    with_status = widgets.patch_namespaced_custom_object_status(
        GROUP, VERSION, 'ml', PLURAL, 'w', {'status': {'phase': 'Ready'}, 'spec': {'size': 99}})
    assert with_status['status'] == {'phase': 'Ready'} and with_status['spec'] == {'size': 1}
    assert with_status['metadata']['generation'] == 1

    main = widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w',
                                                  {'status': {'phase': 'Hacked'}, 'metadata': {'labels': {'a': 'b'}}})
    assert main['status'] == {'phase': 'Ready'} and main['metadata']['generation'] == 1
    assert int(main['metadata']['resourceVersion']) > int(with_status['metadata']['resourceVersion'])

    again = widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w',
                                                   {'metadata': {'labels': {'a': 'b'}}})
    assert again['metadata']['resourceVersion'] == main['metadata']['resourceVersion']  # a no-op write


def test_replace_conflicts_and_strategic_patches_are_refused(widgets: kubernetes.client.CustomObjectsApi,
                                                             server: EmbeddedApiServer) -> None:
    old = widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, _widget('w'))
    widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w', {'spec': {'size': 2}})
    with pytest.raises(ApiException) as info:
        widgets.replace_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w', {**old, 'spec': {'size': 3}})
    assert info.value.status == 409 and json.loads(info.value.body)['reason'] == 'Conflict'

    with pytest.raises(ApiException) as info:
        widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w', {'spec': {'size': 4}},
                                               _content_type='application/strategic-merge-patch+json')
    assert info.value.status == 415

    applied = widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'applied', _widget('applied', 7),
                                                     _content_type='application/apply-patch+yaml',
                                                     field_manager='tests')
    assert applied['spec'] == {'size': 7}


def test_finalizers_hold_deletion(widgets: kubernetes.client.CustomObjectsApi) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL,
                                            {**_widget('w'), 'metadata': {'name': 'w', 'finalizers': ['x/y']}})
    widgets.delete_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w')
    held = widgets.get_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w')
    assert held['metadata']['deletionTimestamp'] and held['metadata']['finalizers'] == ['x/y']

    with pytest.raises(ApiException) as info:
        widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w',
                                               {'metadata': {'finalizers': ['x/y', 'new/one']}})
    assert info.value.status == 422

    widgets.patch_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w', [
        {'op': 'test', 'path': '/metadata/resourceVersion', 'value': held['metadata']['resourceVersion']},
        {'op': 'remove', 'path': '/metadata/finalizers'},
    ], _content_type='application/json-patch+json')
    with pytest.raises(ApiException) as info:
        widgets.get_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, 'w')
    assert info.value.status == 404


def test_crd_deletion_removes_the_resource(widgets: kubernetes.client.CustomObjectsApi,
                                           api_client: kubernetes.client.ApiClient) -> None:
    widgets.create_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL, _widget('w'))
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    crd = extensions.read_custom_resource_definition('widgets.example.com')
    assert {c.type: c.status for c in crd.status.conditions} == {'NamesAccepted': 'True', 'Established': 'True'}
    extensions.delete_custom_resource_definition('widgets.example.com')
    with pytest.raises(ApiException) as info:
        widgets.list_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL)
    assert info.value.status == 404
    extensions.create_custom_resource_definition(WIDGETS_CRD)
    assert widgets.list_namespaced_custom_object(GROUP, VERSION, 'ml', PLURAL)['items'] == []


def test_discovery(server: EmbeddedApiServer, widgets_crd: Any) -> None:
    assert _http(server, 'GET', '/api')[1]['versions'] == ['v1']
    core = _http(server, 'GET', '/api/v1')[1]
    assert core['groupVersion'] == 'v1'
    assert {'pods', 'pods/status', 'namespaces', 'events', 'services', 'secrets', 'configmaps'} <= {
        r['name'] for r in core['resources']}
    groups = {g['name']: g for g in _http(server, 'GET', '/apis')[1]['groups']}
    expected_groups = {'apps', 'batch', 'events.k8s.io', 'coordination.k8s.io', 'apiextensions.k8s.io', 'example.com'}
    assert expected_groups <= set(groups)
    assert groups['example.com']['preferredVersion'] == {'groupVersion': 'example.com/v1', 'version': 'v1'}
    custom = {r['name']: r for r in _http(server, 'GET', '/apis/example.com/v1')[1]['resources']}
    assert custom['widgets']['kind'] == 'Widget' and custom['widgets']['namespaced'] is True
    assert custom['widgets']['shortNames'] == ['wd'] and custom['widgets']['categories'] == ['examples']
    assert 'widgets/status' in custom
    assert _http(server, 'GET', '/apis/example.com')[1]['kind'] == 'APIGroup'
    assert _http(server, 'GET', '/version')[1]['major'] == '1'
    for path in ['/healthz', '/readyz', '/livez']:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            assert response.read() == b'ok'
    assert _http(server, 'GET', '/apis/nothing.example.com/v1')[0] == 404

    # OpenAPI v3: operations only (no schemas), so that kubectl leaves validation to the server.
    url = _http(server, 'GET', '/openapi/v3')[1]['paths']['apis/example.com/v1']['serverRelativeURL']
    spec = _http(server, 'GET', url)[1]
    patch = spec['paths']['/apis/example.com/v1/namespaces/{namespace}/widgets/{name}']['patch']
    assert patch['x-kubernetes-group-version-kind'] == {'group': 'example.com', 'version': 'v1', 'kind': 'Widget'}
    assert 'fieldValidation' in {parameter['name'] for parameter in patch['parameters']}
    assert _http(server, 'GET', '/openapi/v2')[0] == 404


def test_lists_carry_kinds_and_namespaces_are_listable(server: EmbeddedApiServer) -> None:
    status, namespaces = _http(server, 'GET', '/api/v1/namespaces')
    assert status == 200 and namespaces['kind'] == 'NamespaceList' and namespaces['apiVersion'] == 'v1'
    assert namespaces['metadata']['resourceVersion']
    assert {'Namespace'} == {item['kind'] for item in namespaces['items']}
    status, default = _http(server, 'GET', '/api/v1/namespaces/default')
    assert status == 200 and default['metadata']['name'] == 'default'


def test_errors_and_media_types(server: EmbeddedApiServer) -> None:
    status, body = _http(server, 'POST', '/api/v1/namespaces/default/configmaps', b'\x0a\x02k8s',
                         content_type='application/vnd.kubernetes.protobuf')
    assert status == 415 and body['kind'] == 'Status' and body['reason'] == 'UnsupportedMediaType'

    status, body = _http(server, 'POST', '/api/v1/namespaces/default/configmaps', b'{not json')
    assert status == 400 and body['reason'] == 'BadRequest'

    status, body = _http(server, 'POST', '/api/v1/namespaces/default/configmaps',
                         b'metadata: {name: from-yaml}\ndata: {a: "1"}\n', content_type='application/yaml')
    assert status == 201 and body['data'] == {'a': '1'}

    status, body = _http(server, 'PATCH', '/api/v1/namespaces/default/configmaps/from-yaml', b'{}',
                         content_type='text/plain')
    assert status == 415

    status, body = _http(server, 'GET', '/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(x')
    assert status == 400

    status, body = _http(server, 'GET', '/apis/example.com/v1/namespaces/default/widgets')
    assert status == 404 and body['reason'] == 'NotFound'


def test_watch_resumes_or_reports_gone(api_client: kubernetes.client.ApiClient) -> None:
    server = EmbeddedApiServer(event_log_size=3).start()
    try:
        _, listed = _http(server, 'GET', '/api/v1/namespaces/default/configmaps')
        since = listed['metadata']['resourceVersion']
        for index in range(5):
            _http(server, 'POST', '/api/v1/namespaces/default/configmaps',
                  json.dumps({'metadata': {'name': f'c{index}'}}).encode())
        request = urllib.request.Request(
            f'{server.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={since}')
        with urllib.request.urlopen(request, timeout=30) as response:
            event = json.loads(response.readline())
        assert event['type'] == 'ERROR' and event['object']['code'] == 410

        recent = int(since) + 3  # the last two creations are still remembered
        request = urllib.request.Request(f'{server.url}/api/v1/namespaces/default/configmaps'
                                         f'?watch=true&resourceVersion={recent}&timeoutSeconds=1')
        with urllib.request.urlopen(request, timeout=30) as response:
            events = [json.loads(line) for line in response.read().splitlines()]
        assert [(e['type'], e['object']['metadata']['name']) for e in events] == [('ADDED', 'c3'), ('ADDED', 'c4')]

        # A resourceVersion of another server's life (a restarted one) must not hide the current state.
        request = urllib.request.Request(f'{server.url}/api/v1/namespaces/default/configmaps'
                                         f'?watch=true&resourceVersion=999999')
        with urllib.request.urlopen(request, timeout=30) as response:
            event = json.loads(response.readline())
        assert event['type'] == 'ERROR' and event['object']['code'] == 410
    finally:
        server.stop()
