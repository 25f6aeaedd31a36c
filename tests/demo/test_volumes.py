"""Paths between a container's view and this machine's, both ways."""
import json
import pathlib

from modelrelease_local.volumes import PathMap, pod_path_map

LOCAL = PathMap((('/models', pathlib.Path('/srv/local/artifacts')), ('/tmp', pathlib.Path('/var/scratch/p1/tmp'))))


def test_container_paths_become_local_as_whole_components() -> None:
    assert LOCAL.to_local('/models') == '/srv/local/artifacts'
    assert LOCAL.to_local('/models/digits/j1') == '/srv/local/artifacts/digits/j1'
    assert LOCAL.to_local('--output=/models/a') == '--output=/srv/local/artifacts/a'
    assert LOCAL.to_local('file:/models/d.csv?fraction=0.5') == 'file:/srv/local/artifacts/d.csv?fraction=0.5'
    assert LOCAL.to_local('/models/a:/tmp/b') == '/srv/local/artifacts/a:/var/scratch/p1/tmp/b'
    for untouched in ('/models2/a', '/x/models', '/tmpfile', 'sklearn:digits', 'models'):
        assert LOCAL.to_local(untouched) == untouched


def test_messages_come_back_with_container_paths() -> None:
    message = json.dumps({'artifactPath': '/srv/local/artifacts/digits/j1',
                          'error': 'cannot read /var/scratch/p1/tmp/x (/srv/local/artifactsX stays)'})
    back = json.loads(LOCAL.message_to_cluster(message))
    assert back == {'artifactPath': '/models/digits/j1', 'error': 'cannot read /tmp/x (/srv/local/artifactsX stays)'}
    assert LOCAL.message_to_cluster('failed at /srv/local/artifacts/a') == 'failed at /models/a'


def test_a_pods_volumes_map_to_the_artifact_root_and_private_scratch(tmp_path: pathlib.Path) -> None:
    pod_spec = {'volumes': [{'name': 'models', 'persistentVolumeClaim': {'claimName': 'artifacts'}},
                            {'name': 'tmp', 'emptyDir': {}},
                            {'name': 'data', 'hostPath': {'path': '/data/sets'}},
                            {'name': 'config', 'configMap': {'name': 'c'}}]}
    container = {'volumeMounts': [{'name': 'models', 'mountPath': '/models', 'subPath': 'digits'},
                                  {'name': 'tmp', 'mountPath': '/tmp'},
                                  {'name': 'data', 'mountPath': '/data'},
                                  {'name': 'config', 'mountPath': '/etc/app/'}]}
    root, scratch = tmp_path / 'artifacts', tmp_path / 'scratch'

    paths = pod_path_map(pod_spec, container, root, scratch)

    assert dict(paths.mounts) == {'/models': root / 'digits', '/tmp': scratch / 'tmp',
                                  '/data': root / 'volumes' / 'host' / 'data' / 'sets',
                                  '/etc/app': scratch / 'volumes' / 'config'}
    assert all(local.is_dir() for local in paths.local_dirs())


def test_tmp_is_private_even_when_not_mounted(tmp_path: pathlib.Path) -> None:
    paths = pod_path_map({}, {}, tmp_path / 'artifacts', tmp_path / 'scratch')
    assert paths.to_local('/tmp/x') == str(tmp_path / 'scratch' / 'tmp' / 'x')
