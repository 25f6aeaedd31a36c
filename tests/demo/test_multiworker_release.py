"""
A release whose last stage trains on two workers, on the embedded default as a user runs it (`up`, a
ModelRelease applied through the API): the operator makes the Indexed Job and its headless Service, the
embedded cluster runs two trainer processes with TF_CONFIG on loopback ports, and the two-worker model passes
gates set against the one-worker model of the stage before. One worker is SIGKILLed mid-training: the Job
retries and both workers resume from the chief's checkpoint, which the version records.
"""
import json
import pathlib
import signal
from typing import Any

import kubernetes
import psutil
import pytest
import yaml

from modelrelease_local.ports import free_port
from tests.demo.test_crash_safe_release import RELEASE_TIMEOUT, Stack, _api, _release, _serves_releases, stacks
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
__all__ = ['stacks']  # the fixture, used by name below
EPOCHS = 30
KILL_AFTER_EPOCH = 3


def release(prometheus: str) -> dict[str, Any]:
    def stage(name: str, workers: int, gates: list[dict[str, Any]]) -> dict[str, Any]:
        return {'name': name, 'gates': gates, 'steps': [{'weight': 100, 'duration': '5s'}],
                'training': {'data': 'sklearn:digits', 'epochs': EPOCHS, 'batchSize': 32, 'initFrom': 'none',
                             'workers': workers, 'optimizer': {'name': 'adam', 'learningRate': 0.002}}}

    return {
        'apiVersion': 'modelrelease.io/v1alpha1', 'kind': 'ModelRelease', 'metadata': {'name': 'digits'},
        'spec': {
            'model': {'name': 'digits', 'storage': {'hostPath': {'path': '/var/lib/modelrelease/digits'}}},
            # A killed worker and its peer, which then exits too: two failed pods, within 3 x 2 workers.
            'training': {'backoffLimit': 3, 'activeDeadlineSeconds': 900},
            'stages': [
                stage('single', 1, [{'metric': 'accuracy', 'min': 0.9}]),
                # As good as one worker on the same data and epochs: the gates read the stable, i.e. 'single'.
                stage('multi', 2, [{'metric': 'accuracy', 'min': 0.9, 'maxDrop': 0.03},
                                   {'metric': 'f1', 'maxDrop': 0.03}]),
            ],
            'serving': {'replicas': 1},
            'analysis': {'prometheus': {'url': prometheus}, 'interval': '5s'},
        },
    }


def _checkpointed_epochs(state: pathlib.Path, job: str) -> int:
    found = [path for path in (state / 'artifacts').rglob('checkpoint/state.json') if job in str(path)]
    for path in found:
        try:
            return int(json.loads(path.read_text())['epochsDone'])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def _worker(stack: Stack, job: str, index: int) -> psutil.Process | None:
    for process in stack.descendants('modelrelease_trainer', job):
        try:
            if process.environ().get('JOB_COMPLETION_INDEX') == str(index):
                return process
        except psutil.Error:
            continue
    return None


def _multi_job(state: pathlib.Path) -> str | None:
    records = (_release(state).get('status') or {}).get('stages') or []
    record = next((r for r in records if r['name'] == 'multi'), None)
    return record.get('jobName') if record and record.get('phase') == 'Training' else None


def test_a_two_worker_stage_trains_passes_its_gates_and_resumes_after_a_killed_worker(
        stacks: list[Stack], no_leftovers: pathlib.Path) -> None:
    state = no_leftovers / 'state'
    prometheus_port = free_port()
    stacks.append(stack := Stack(state, no_leftovers / 'up.log', 'up', '--no-traffic',
                                 '--prometheus-port', str(prometheus_port)))
    wait_for(lambda: _serves_releases(state), message='up to serve ModelReleases', timeout=300)
    with _api(state) as client:
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            'modelrelease.io', 'v1alpha1', 'default', 'modelreleases', release(f'http://127.0.0.1:{prometheus_port}'))

    job = wait_for(lambda: _multi_job(state), message='the two-worker stage to train', timeout=RELEASE_TIMEOUT)
    with _api(state) as client:
        service = kubernetes.client.CoreV1Api(client).read_namespaced_service(job, 'default')
        indexed = kubernetes.client.BatchV1Api(client).read_namespaced_job(job, 'default')
    assert service.spec.cluster_ip == 'None' and service.metadata.owner_references[0].uid == indexed.metadata.uid
    assert (indexed.spec.completion_mode, indexed.spec.completions, indexed.spec.parallelism) == ('Indexed', 2, 2)

    wait_for(lambda: _checkpointed_epochs(state, job) >= KILL_AFTER_EPOCH,
             message=f'the chief to checkpoint epoch {KILL_AFTER_EPOCH}', timeout=600)
    victim = wait_for(lambda: _worker(stack, job, 1), message='worker 1 to run')
    victim.send_signal(signal.SIGKILL)

    released = wait_for(lambda: (r := _release(state)).get('status', {}).get('phase') in ('Released', 'RolledBack',
                                                                                         'Failed') and r,
                        message='the release to end', timeout=RELEASE_TIMEOUT)
    status = released['status']
    assert status['phase'] == 'Released', yaml.safe_dump(status)
    single, multi = (next(s for s in status['stages'] if s['name'] == name)['version'] for name in ('single', 'multi'))
    assert status['stable']['id'] == multi['id'] and [v['stage'] for v in status['history']] == ['single', 'multi']
    assert multi['hyperparameters']['workers'] == 2 and single['hyperparameters']['workers'] == 1
    # Both workers came back from the chief's checkpoint, not from epoch 0.
    assert KILL_AFTER_EPOCH <= multi['resumedFromEpoch'] < EPOCHS
    assert single['resumedFromEpoch'] == 0
    assert multi['dataHash'] == single['dataHash'] and multi['dataHash'].startswith('sha256:')
    assert multi['metrics']['accuracy'] >= single['metrics']['accuracy'] - 0.03
    with _api(state) as client:
        pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
            'default', label_selector=f'job-name={job}').items
    phases = sorted((pod.metadata.labels['batch.kubernetes.io/job-completion-index'], pod.status.phase)
                    for pod in pods)
    assert phases.count(('0', 'Succeeded')) == 1 and phases.count(('1', 'Succeeded')) == 1
    assert ('1', 'Failed') in phases, phases  # the killed worker's pod

    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(180) == 0, stack.text()
