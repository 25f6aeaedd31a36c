"""kubectl against the embedded API server (plain HTTP, no auth, no OpenAPI: --validate=false)."""
import pathlib
import subprocess

import yaml

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.outcomes import JobOutcome
from tests.local.conftest import WIDGETS_CRD, Kubectl, deployment_body, job_body
from tests.waiting import wait_for


def test_custom_resource_lifecycle(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    crd_file = tmp_path / 'crd.yaml'
    crd_file.write_text(yaml.safe_dump(WIDGETS_CRD))
    widget_file = tmp_path / 'widget.yaml'
    widget_file.write_text(yaml.safe_dump({
        'apiVersion': 'example.com/v1', 'kind': 'Widget',
        'metadata': {'name': 'w1', 'namespace': 'default', 'labels': {'team': 'ml'}}, 'spec': {'size': 3},
    }))

    # Validation is left to the server (which does not check schemas), so --validate=false is optional.
    assert 'created' in kubectl('apply', '-f', str(crd_file)).stdout
    kubectl('wait', '--for=condition=Established', 'crd/widgets.example.com', '--timeout=30s')
    assert 'widget.example.com/w1 created' in kubectl('apply', '--validate=false', '-f', str(widget_file)).stdout

    table = kubectl('get', 'wd').stdout.splitlines()
    assert table[0].split() == ['NAME', 'SIZE', 'PHASE', 'AGE']
    assert table[1].split()[:2] == ['w1', '3']

    kubectl('patch', 'wd', 'w1', '--type=merge', '-p', '{"spec": {"size": 5}}')
    fetched = yaml.safe_load(kubectl('get', 'widget', 'w1', '-o', 'yaml').stdout)
    assert fetched['spec'] == {'size': 5}
    assert fetched['kind'] == 'Widget' and fetched['metadata']['generation'] == 2

    # A re-apply computes a patch against the last-applied configuration.
    assert 'configured' in kubectl('apply', '-f', str(widget_file)).stdout
    assert yaml.safe_load(kubectl('get', 'widgets.example.com', 'w1', '-o', 'yaml').stdout)['spec'] == {'size': 3}

    described = kubectl('describe', 'wd', 'w1').stdout
    assert 'Name:         w1' in described and 'team=ml' in described and 'Size:  3' in described

    listed = kubectl('get', 'wd', '-A', '-l', 'team=ml', '-o', 'name').stdout.split()
    assert listed == ['widget.example.com/w1']

    assert 'deleted' in kubectl('delete', 'wd', 'w1').stdout
    assert 'No resources found' in kubectl('get', 'wd').stderr


def test_builtin_kinds(kubectl: Kubectl, server: EmbeddedApiServer, tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / 'deployment.yaml'
    manifest.write_text(yaml.safe_dump(deployment_body('srv', replicas=2)))
    kubectl('apply', '-n', 'ml', '-f', str(manifest))
    def ready_replicas() -> str:
        return str(kubectl('get', 'deploy', 'srv', '-n', 'ml', '-o', 'jsonpath={.status.readyReplicas}').stdout)

    wait_for(lambda: ready_replicas() == '2', message='the deployment to become ready')
    rows = kubectl('get', 'deployments', '-n', 'ml').stdout.splitlines()
    assert rows[0].split() == ['NAME', 'READY', 'UP-TO-DATE', 'AVAILABLE', 'AGE']
    assert rows[1].split()[:4] == ['srv', '2/2', '2', '2']

    kubectl('scale', 'deployment/srv', '-n', 'ml', '--replicas=3')
    kubectl('rollout', 'status', 'deployment/srv', '-n', 'ml', '--timeout=30s')
    assert ready_replicas() == '3'

    # Imperative creations of these kinds arrive as protobuf.
    kubectl('create', 'namespace', 'team')
    kubectl('create', 'configmap', 'settings', '-n', 'team', '--from-literal=a=1')
    kubectl('create', 'secret', 'generic', 'token', '-n', 'team', '--from-literal=key=value')
    assert server.get_object('v1', 'configmaps', 'team', 'settings')['data'] == {'a': '1'}  # type: ignore[index]
    assert server.get_object('v1', 'secrets', 'team', 'token')['data'] == {'key': 'dmFsdWU='}  # type: ignore[index]
    assert 'settings' in kubectl('get', 'cm', '-n', 'team').stdout
    assert 'ml' in kubectl('get', 'namespaces').stdout
    kubectl('delete', 'deployment', 'srv', '-n', 'ml')
    assert server.get_object('apps/v1', 'deployments', 'ml', 'srv') is None


def test_jobs_and_pods(kubectl: Kubectl, tmp_path: pathlib.Path, outcomes: dict[str, JobOutcome]) -> None:
    outcomes['train'] = JobOutcome.succeeded('{"accuracy": 0.9}')
    manifest = tmp_path / 'job.yaml'
    manifest.write_text(yaml.safe_dump(job_body('train')))
    assert 'job.batch/train created' in kubectl('apply', '-f', str(manifest)).stdout
    kubectl('wait', '--for=condition=complete', 'job/train', '--timeout=30s')
    assert 'unchanged' in kubectl('apply', '-f', str(manifest)).stdout

    rows = kubectl('get', 'jobs').stdout.splitlines()
    assert rows[0].split() == ['NAME', 'STATUS', 'COMPLETIONS', 'AGE']
    assert rows[1].split()[:3] == ['train', 'Complete', '1/1']
    pods = kubectl('get', 'pods', '-l', 'job-name=train').stdout.splitlines()
    assert pods[1].split()[1:3] == ['0/1', 'Completed']
    message = kubectl('get', 'pods', '-l', 'job-name=train', '-o',
                      'jsonpath={.items[0].status.containerStatuses[0].state.terminated.message}').stdout
    assert message == '{"accuracy": 0.9}'

    kubectl('label', 'job', 'train', 'release=r1')
    assert kubectl('get', 'jobs', '-l', 'release=r1', '-o', 'name').stdout.split() == ['job.batch/train']
    kubectl('delete', 'job', 'train')
    wait_for(lambda: 'No resources found' in kubectl('get', 'pods').stderr, message='the pods to be collected')


def test_get_watch_prints_rows_with_the_printer_columns(kubeconfig: pathlib.Path, widgets_crd: dict,
                                                        custom) -> None:
    custom.create_namespaced_custom_object('example.com', 'v1', 'default', 'widgets', {
        'apiVersion': 'example.com/v1', 'kind': 'Widget', 'metadata': {'name': 'w1'}, 'spec': {'size': 3}})
    watching = subprocess.Popen(['kubectl', '--kubeconfig', str(kubeconfig), 'get', 'widgets', '-w'],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert watching.stdout is not None
        assert watching.stdout.readline().split() == ['NAME', 'SIZE', 'PHASE', 'AGE']
        assert watching.stdout.readline().split()[:2] == ['w1', '3']
        custom.patch_namespaced_custom_object_status('example.com', 'v1', 'default', 'widgets', 'w1',
                                                     {'status': {'phase': 'Grown'}})
        assert watching.stdout.readline().split()[:3] == ['w1', '3', 'Grown']
    finally:
        watching.kill()
        watching.wait()
