"""The kubernetes python client against the embedded API server: built-in workload kinds."""
import json
from typing import Any

import kubernetes
import pytest

from tests.local.conftest import deployment_body, job_body
from tests.waiting import wait_for

ApiException = kubernetes.client.ApiException


def _status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_create_get_list_delete_deployments(apps: kubernetes.client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment('ml', deployment_body('one', replicas=2))
    assert created.metadata.uid
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    assert created.spec.replicas == 2

    fetched = apps.read_namespaced_deployment('one', 'ml')
    assert fetched.metadata.uid == created.metadata.uid

    apps.create_namespaced_deployment('ml', deployment_body('two'))
    listed = apps.list_namespaced_deployment('ml')
    assert [d.metadata.name for d in listed.items] == ['one', 'two']
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)

    apps.delete_namespaced_deployment('one', 'ml')
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment('one', 'ml')
    assert info.value.status == 404
    status = _status_of(info.value)
    assert status['kind'] == 'Status' and status['apiVersion'] == 'v1'
    assert status['status'] == 'Failure' and status['reason'] == 'NotFound' and status['code'] == 404
    assert status['message'] == 'deployments.apps "one" not found'


@pytest.mark.parametrize('selector, expected', [
    ('app=a', ['a']),
    ('app==a', ['a']),
    ('app!=a', ['b', 'c']),
    ('app in (a,b)', ['a', 'b']),
    ('app notin (a,b)', ['c']),
    ('canary', ['b']),
    ('!canary', ['a', 'c']),
    ('tier=serving,!canary', ['a', 'c']),
    ('tier=serving,app in (b, c),canary', ['b']),
])
def test_label_selectors(apps: kubernetes.client.AppsV1Api, selector: str, expected: list[str]) -> None:
    for name in ['a', 'b', 'c']:
        body = deployment_body(name)
        if name == 'b':
            body['metadata']['labels']['canary'] = 'true'
        apps.create_namespaced_deployment('ml', body)
    found = apps.list_namespaced_deployment('ml', label_selector=selector)
    assert [d.metadata.name for d in found.items] == expected
    cluster_wide = apps.list_deployment_for_all_namespaces(label_selector=selector)
    assert [d.metadata.name for d in cluster_wide.items] == expected


def test_field_selectors_and_cluster_wide_lists(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ns1', deployment_body('x'))
    apps.create_namespaced_deployment('ns2', deployment_body('x'))
    apps.create_namespaced_deployment('ns2', deployment_body('y'))
    everything = apps.list_deployment_for_all_namespaces()
    assert [(d.metadata.namespace, d.metadata.name) for d in everything.items] == [
        ('ns1', 'x'), ('ns2', 'x'), ('ns2', 'y')]
    by_name = apps.list_deployment_for_all_namespaces(field_selector='metadata.name=x')
    assert [d.metadata.namespace for d in by_name.items] == ['ns1', 'ns2']
    by_namespace = apps.list_deployment_for_all_namespaces(field_selector='metadata.namespace=ns2,metadata.name!=x')
    assert [d.metadata.name for d in by_namespace.items] == ['y']


def test_namespaces_exist_and_are_created_on_demand(core: kubernetes.client.CoreV1Api,
                                                    batch: kubernetes.client.BatchV1Api) -> None:
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert 'default' in names and 'fresh' not in names
    batch.create_namespaced_job('fresh', job_body('j'))
    assert core.read_namespace('fresh').status.phase == 'Active'


def test_duplicate_create_is_409_already_exists(batch: kubernetes.client.BatchV1Api) -> None:
    batch.create_namespaced_job('ml', job_body('train'))
    with pytest.raises(ApiException) as info:
        batch.create_namespaced_job('ml', job_body('train'))
    assert info.value.status == 409
    status = _status_of(info.value)
    assert status['reason'] == 'AlreadyExists'
    assert status['details'] == {'name': 'train', 'group': 'batch', 'kind': 'jobs'}


def test_generate_name(core: kubernetes.client.CoreV1Api) -> None:
    body = {'metadata': {'generateName': 'cfg-'}, 'data': {'a': '1'}}
    first = core.create_namespaced_config_map('ml', body)
    second = core.create_namespaced_config_map('ml', body)
    assert first.metadata.name.startswith('cfg-') and len(first.metadata.name) == len('cfg-') + 5
    assert first.metadata.name != second.metadata.name


def test_replace_with_a_stale_resource_version_is_409(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv'))
    stale = apps.read_namespaced_deployment('srv', 'ml')
    apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'touched': 'yes'}}})

    stale.spec.replicas = 5
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment('srv', 'ml', stale)
    assert info.value.status == 409
    assert _status_of(info.value)['reason'] == 'Conflict'

    fresh = apps.read_namespaced_deployment('srv', 'ml')
    fresh.spec.replicas = 5
    replaced = apps.replace_namespaced_deployment('srv', 'ml', fresh)
    assert replaced.spec.replicas == 5
    assert replaced.metadata.generation == 2
    assert 'touched' in replaced.metadata.labels


def test_merge_patch_replaces_lists_and_deletes_nulls(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv'))
    patched = apps.patch_namespaced_deployment('srv', 'ml', {
        'metadata': {'labels': {'tier': None, 'new': 'label'}},
        'spec': {'template': {'spec': {'containers': [{'name': 'other', 'image': 'other:2'}]}}},
    }, _content_type='application/merge-patch+json')
    assert patched.metadata.labels == {'app': 'srv', 'new': 'label'}
    assert [c.name for c in patched.spec.template.spec.containers] == ['other']


def test_json_patch_with_a_failing_test_is_422(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv'))
    # Let the deployment controller settle, so that the resourceVersion stays still meanwhile.
    settled = wait_for(lambda: (d := apps.read_namespaced_deployment('srv', 'ml')).status.ready_replicas == 1 and d,
                       message='the deployment to be ready')
    patched = apps.patch_namespaced_deployment('srv', 'ml', [
        {'op': 'test', 'path': '/metadata/resourceVersion', 'value': settled.metadata.resource_version},
        {'op': 'replace', 'path': '/spec/replicas', 'value': 4},
        {'op': 'add', 'path': '/metadata/labels/added', 'value': 'yes'},
        {'op': 'remove', 'path': '/metadata/labels/tier'},
    ])
    assert patched.spec.replicas == 4
    assert patched.metadata.labels == {'app': 'srv', 'added': 'yes'}

    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment('srv', 'ml', [
            {'op': 'test', 'path': '/metadata/resourceVersion', 'value': settled.metadata.resource_version},
            {'op': 'replace', 'path': '/spec/replicas', 'value': 9},
        ])
    assert info.value.status == 422
    assert apps.read_namespaced_deployment('srv', 'ml').spec.replicas == 4


def test_strategic_merge_patch_merges_containers_and_obeys_directives(apps: kubernetes.client.AppsV1Api) -> None:
    body = deployment_body('srv')
    body['spec']['template']['spec']['containers'].append({'name': 'sidecar', 'image': 'sidecar:1'})
    apps.create_namespaced_deployment('ml', body)
    # A dict body goes as a strategic merge patch with this client.
    patched = apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'template': {'spec': {
        'containers': [{'name': 'main', 'image': 'server:2', 'env': [{'name': 'B', 'value': '2'}]},
                       {'name': 'sidecar', '$patch': 'delete'}],
        '$setElementOrder/containers': [{'name': 'main'}],
    }}}})
    containers = patched.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [('main', 'server:2')]
    assert [(e.name, e.value) for e in containers[0].env] == [('A', '1'), ('B', '2')]
    raw = json.dumps(patched.to_dict(), default=str)
    assert '$patch' not in raw and '$setElementOrder' not in raw


def test_generation_changes_only_with_the_spec(apps: kubernetes.client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment('ml', deployment_body('srv'))
    assert created.metadata.generation == 1

    relabelled = apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'x': 'y'}}})
    assert relabelled.metadata.generation == 1
    assert int(relabelled.metadata.resource_version) > int(created.metadata.resource_version)

    status_written = apps.patch_namespaced_deployment_status('srv', 'ml', {'status': {'collisionCount': 1}})
    assert status_written.metadata.generation == 1

    rescaled = apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'replicas': 3}})
    assert rescaled.metadata.generation == 2

    same = apps.patch_namespaced_deployment('srv', 'ml', {'spec': {'replicas': 3}})
    assert same.metadata.generation == 2


def test_status_subresource_isolation(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv'))
    wait_for(lambda: apps.read_namespaced_deployment('srv', 'ml').status.ready_replicas == 1,
             message='the deployment controller to report readiness')

    main = apps.patch_namespaced_deployment('srv', 'ml', {'status': {'readyReplicas': 7},
                                                          'metadata': {'labels': {'seen': 'yes'}}},
                                            _content_type='application/merge-patch+json')
    assert main.status.ready_replicas == 1 and main.metadata.labels['seen'] == 'yes'

    status = apps.patch_namespaced_deployment_status('srv', 'ml', {
        'status': {'collisionCount': 2}, 'spec': {'replicas': 9}, 'metadata': {'labels': {'ignored': 'yes'}},
    }, _content_type='application/merge-patch+json')
    assert status.status.collision_count == 2
    assert status.spec.replicas == 1 and 'ignored' not in status.metadata.labels


def test_dry_run_validates_without_storing(apps: kubernetes.client.AppsV1Api) -> None:
    answer = apps.create_namespaced_deployment('ml', deployment_body('dry'), dry_run='All')
    assert answer.metadata.name == 'dry'
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment('dry', 'ml')
    assert info.value.status == 404

    apps.create_namespaced_deployment('ml', deployment_body('wet'))
    apps.patch_namespaced_deployment('wet', 'ml', {'spec': {'replicas': 4}}, dry_run='All')
    apps.delete_namespaced_deployment('wet', 'ml', dry_run='All')
    assert apps.read_namespaced_deployment('wet', 'ml').spec.replicas == 1


def test_invalid_objects_are_rejected_with_422(apps: kubernetes.client.AppsV1Api,
                                               batch: kubernetes.client.BatchV1Api) -> None:
    bad_job = job_body('bad')
    bad_job['spec']['template']['spec']['restartPolicy'] = 'Always'
    with pytest.raises(ApiException) as info:
        batch.create_namespaced_job('ml', bad_job)
    assert info.value.status == 422 and _status_of(info.value)['reason'] == 'Invalid'

    bad_deployment = deployment_body('bad')
    bad_deployment['spec']['selector'] = {'matchLabels': {'app': 'other'}}
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment('ml', bad_deployment)
    assert info.value.status == 422

    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment('ml', deployment_body('Not_A_Name'))
    assert info.value.status == 422


def test_jobs_get_controller_labels_and_selectors(batch: kubernetes.client.BatchV1Api) -> None:
    job = batch.create_namespaced_job('ml', job_body('train', labels={'release': 'r1'}))
    uid = job.metadata.uid
    assert job.spec.selector.match_labels == {'batch.kubernetes.io/controller-uid': uid}
    assert job.spec.template.metadata.labels == {
        'role': 'trainer', 'batch.kubernetes.io/controller-uid': uid, 'batch.kubernetes.io/job-name': 'train',
        'controller-uid': uid, 'job-name': 'train'}
    assert job.metadata.labels == {'release': 'r1'}
    assert batch.list_namespaced_job('ml', label_selector='release=r1').items[0].metadata.name == 'train'


def test_garbage_collection_of_owned_objects(core: kubernetes.client.CoreV1Api,
                                             apps: kubernetes.client.AppsV1Api) -> None:
    owner = apps.create_namespaced_deployment('ml', deployment_body('owner'))
    other = apps.create_namespaced_deployment('ml', deployment_body('other'))

    def owned_by(*owners: Any) -> list[dict[str, Any]]:
        return [{'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': o.metadata.name, 'uid': o.metadata.uid}
                for o in owners]

    child = core.create_namespaced_config_map('ml', {'metadata': {'name': 'child',
                                                                  'ownerReferences': owned_by(owner)}})
    core.create_namespaced_secret('ml', {'metadata': {'name': 'grandchild', 'ownerReferences': [
        {'apiVersion': 'v1', 'kind': 'ConfigMap', 'name': 'child', 'uid': child.metadata.uid}]}})
    core.create_namespaced_config_map('ml', {'metadata': {'name': 'shared',
                                                          'ownerReferences': owned_by(owner, other)}})
    core.create_namespaced_config_map('ml', {'metadata': {'name': 'orphan'}})

    apps.delete_namespaced_deployment('owner', 'ml')

    def names() -> set[str]:
        return ({c.metadata.name for c in core.list_namespaced_config_map('ml').items} |
                {s.metadata.name for s in core.list_namespaced_secret('ml').items})

    wait_for(lambda: names() == {'shared', 'orphan'}, message='the dependents to be collected')
    shared = core.read_namespaced_config_map('shared', 'ml')
    assert [ref.name for ref in shared.metadata.owner_references] == ['other']


def test_orphan_propagation_keeps_dependents(core: kubernetes.client.CoreV1Api,
                                             apps: kubernetes.client.AppsV1Api) -> None:
    owner = apps.create_namespaced_deployment('ml', deployment_body('owner'))
    core.create_namespaced_config_map('ml', {'metadata': {'name': 'child', 'ownerReferences': [
        {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': 'owner', 'uid': owner.metadata.uid}]}})
    apps.delete_namespaced_deployment('owner', 'ml', propagation_policy='Orphan')
    wait_for(lambda: not core.read_namespaced_config_map('child', 'ml').metadata.owner_references,
             message='the dependent to be orphaned')


def test_watch_streams_changes(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('before'))
    since = apps.list_namespaced_deployment('ml').metadata.resource_version
    apps.create_namespaced_deployment('ml', deployment_body('srv', replicas=0))
    apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'x': 'y'}}})
    apps.delete_namespaced_deployment('srv', 'ml')

    events = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(apps.list_namespaced_deployment, 'ml', resource_version=since, timeout_seconds=5):
        events.append((event['type'], event['object'].metadata.name))
        if event['type'] == 'DELETED':
            watch.stop()
    # The status writes of the deployment controller interleave as MODIFIED events.
    assert events[0] == ('ADDED', 'srv') and events[-1] == ('DELETED', 'srv')
    assert ('MODIFIED', 'srv') in events and ('ADDED', 'before') not in events


def test_watch_without_resource_version_starts_with_the_current_state(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('a', replicas=0))
    apps.create_namespaced_deployment('other', deployment_body('b', replicas=0))
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(apps.list_deployment_for_all_namespaces, timeout_seconds=1):
        seen.append((event['type'], event['object'].metadata.namespace, event['object'].metadata.name))
    assert seen[:2] == [('ADDED', 'ml', 'a'), ('ADDED', 'other', 'b')]


def test_filtered_watch_sees_objects_leaving_and_entering(apps: kubernetes.client.AppsV1Api) -> None:
    apps.create_namespaced_deployment('ml', deployment_body('srv', replicas=0))
    # Let the deployment controller write its status first, so that only the label changes follow.
    wait_for(lambda: apps.read_namespaced_deployment('srv', 'ml').status.observed_generation == 1,
             message='the deployment controller to observe the deployment')
    since = apps.list_namespaced_deployment('ml').metadata.resource_version
    apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'stage': 'canary'}}})
    apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'stage': 'stable'}}})
    apps.patch_namespaced_deployment('srv', 'ml', {'metadata': {'labels': {'stage': 'canary'}}})
    watch = kubernetes.watch.Watch()
    seen = [event['type'] for event in watch.stream(apps.list_namespaced_deployment, 'ml', resource_version=since,
                                                      label_selector='stage=canary', timeout_seconds=1)]
    assert seen == ['ADDED', 'DELETED', 'ADDED']
