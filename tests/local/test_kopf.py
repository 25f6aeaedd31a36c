"""kopf, for real, against the embedded API server: handlers, status patches, events, finalizers."""
import pathlib
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner

from modelrelease_local.apiserver import EmbeddedApiServer
from tests.waiting import wait_for

OPERATOR = pathlib.Path(__file__).with_name('kopf_widget_operator.py')


def _widget(custom: kubernetes.client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    try:
        return custom.get_namespaced_custom_object('example.com', 'v1', 'default', 'widgets', name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _events(core: kubernetes.client.CoreV1Api, reason: str) -> list[Any]:
    return [event for event in core.list_namespaced_event('default').items if event.reason == reason]


@pytest.fixture
def own_registry() -> Iterator[kopf.OperatorRegistry]:
    # The handlers of the test operator go to a registry of their own, and kopf's default registry is
    # restored afterwards: other tests in this process may run other operators (and their login handlers).
    previous = kopf.get_default_registry()
    registry = kopf.OperatorRegistry()
    try:
        yield registry
    finally:
        kopf.set_default_registry(previous)


def test_kopf_operator_lifecycle(server: EmbeddedApiServer, kubeconfig: pathlib.Path, widgets_crd: Any,
                                 custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api,
                                 own_registry: kopf.OperatorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('KUBECONFIG', str(kubeconfig))
    with KopfRunner(['run', '--standalone', '-A', '--verbose', str(OPERATOR)], timeout=60,
                    registry=own_registry) as runner:
        custom.create_namespaced_custom_object('example.com', 'v1', 'default', 'widgets', {
            'apiVersion': 'example.com/v1', 'kind': 'Widget', 'metadata': {'name': 'w1'}, 'spec': {'size': 3},
        })

        # The create handler's status patch lands, through the status subresource.
        created = wait_for(lambda: (w := _widget(custom, 'w1')) and w.get('status', {}).get('phase') == 'Created' and w,
                           message='the status patch of the create handler')
        assert created['status']['create_widget'] == {'size': 3}
        assert any(finalizer.startswith('kopf.zalando.org/') for finalizer in created['metadata']['finalizers'])

        # The timer keeps ticking (each tick is a status patch that kopf sees again as a change).
        wait_for(lambda: (w := _widget(custom, 'w1')) and w.get('status', {}).get('ticks', 0) >= 3,
                 message='three timer ticks')

        # After all those changes, the create handler still ran only once: one Event of it.
        events = wait_for(lambda: _events(core, 'WidgetCreated'), message='the event of the create handler')
        assert len(_events(core, 'WidgetCreated')) == 1
        assert events[0].involved_object.name == 'w1'
        assert events[0].message == 'A widget of size 3'

        # Deletion: the finalizer holds the object until the delete handler has run.
        custom.delete_namespaced_custom_object('example.com', 'v1', 'default', 'widgets', 'w1')
        wait_for(lambda: _widget(custom, 'w1') is None, message='the widget to be finalized and deleted')

    assert runner.exit_code == 0
    assert runner.exception is None
    assert 'Widget w1 is going away.' in runner.output
    assert "Handler 'create_widget' succeeded." in runner.output

    # kopf's writes: the finalizer added and removed by JSON patches, the statuses via /status.
    finalizer_patches = [r for r in server.requests.filter('PATCH', path_suffix='/widgets/w1')
                         if r.content_type == 'application/json-patch+json']
    assert len(finalizer_patches) >= 2
    assert all(r.status == 200 for r in finalizer_patches)
    assert server.requests.count('PATCH', path_suffix='/widgets/w1/status') >= 4
    assert server.requests.count('POST', path_suffix='/namespaces/default/events') >= 1
