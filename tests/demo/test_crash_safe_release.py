"""
The embedded default under kills and signals, through `python -m modelrelease_local up|demo` as a user
runs them: a release survives a killed operator and a killed stack, and nothing outlives a stopped one.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes
import psutil
import pytest
import yaml

from modelrelease_local.ports import free_port, port_is_free
from tests.demo.conftest import processes_mentioning
from tests.demo.test_end_to_end import short_release
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
RELEASE_TIMEOUT = 900.0


def _local(state: pathlib.Path, *args: str) -> list[str]:
    return [sys.executable, '-m', 'modelrelease_local', '--state-dir', str(state), *args]


class Stack:
    """One `up` or `demo` process, its output in a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, state: pathlib.Path, output: pathlib.Path, *args: str) -> None:
        self.output = output
        with output.open('ab') as sink:
            self.process = subprocess.Popen(_local(state, *args), stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            env={**os.environ, 'COLUMNS': '200'})

    def text(self) -> str:
        return self.output.read_text(errors='replace')

    def descendants(self, *words: str) -> list[psutil.Process]:
        found = []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                if all(any(word in part for part in child.cmdline()) for word in words):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(60)


@pytest.fixture
def stacks(no_leftovers: pathlib.Path) -> Iterator[list[Stack]]:
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def _api(state: pathlib.Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(str(state / 'kubeconfig'))


def _serves_releases(state: pathlib.Path) -> bool:
    if not (state / 'kubeconfig').exists():
        return False
    try:
        with _api(state) as client:
            kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
                'modelrelease.io', 'v1alpha1', 'default', 'modelreleases')
    except Exception:
        return False
    return True


def _release(state: pathlib.Path) -> dict[str, Any]:
    with _api(state) as client:
        found: dict[str, Any] = kubernetes.client.CustomObjectsApi(client).get_namespaced_custom_object(
            'modelrelease.io', 'v1alpha1', 'default', 'modelreleases', 'digits')
    return found


def _running_pod_of_stage(state: pathlib.Path, stage: str) -> bool:
    try:
        with _api(state) as client:
            pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
                'default', label_selector=f'modelrelease.io/stage={stage}').items
    except Exception:
        return False
    return any(pod.status and pod.status.phase == 'Running' for pod in pods)


def _scraped_servers(port: int) -> int:
    """How many model servers Prometheus scrapes successfully."""
    try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/targets', timeout=10) as response:
            targets = json.loads(response.read())['data']['activeTargets']
    except OSError:
        return 0
    return sum(1 for target in targets if target['labels'].get('job') == 'modelserver' and target['health'] == 'up')


def _ports(state: pathlib.Path) -> dict[str, int]:
    ports: dict[str, int] = json.loads((state / 'ports.json').read_text())
    return ports


def _nothing_left(state: pathlib.Path, ports: dict[str, int]) -> None:
    wait_for(lambda: not processes_mentioning(str(state)), message=f'no process left mentioning {state}')
    wait_for(lambda: all(port_is_free(port) for port in ports.values()), message=f'the ports {ports} to be free')


def test_a_release_survives_a_killed_operator_and_a_killed_stack(stacks: list[Stack],
                                                                 no_leftovers: pathlib.Path) -> None:
    state = no_leftovers / 'state'
    prometheus_port = free_port()
    up_args = ('up', '--prometheus-port', str(prometheus_port))
    stacks.append(first := Stack(state, no_leftovers / 'up-1.log', *up_args))
    wait_for(lambda: _serves_releases(state), message='the first up to serve ModelReleases', timeout=300)
    kubeconfig = (state / 'kubeconfig').read_text()
    manifest = short_release()
    manifest['spec']['analysis']['prometheus']['url'] = f'http://127.0.0.1:{prometheus_port}'
    with _api(state) as client:
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            'modelrelease.io', 'v1alpha1', 'default', 'modelreleases', manifest)

    # The operator dies while the second stage trains: the stack starts it again.
    wait_for(lambda: _running_pod_of_stage(state, 'grow'), message='stage 2 to train', timeout=RELEASE_TIMEOUT)
    [operator] = first.descendants('modelrelease', 'run')
    operator.send_signal(signal.SIGKILL)
    wait_for(lambda: [p for p in first.descendants('modelrelease', 'run') if p.pid != operator.pid],
             message='a new operator process', timeout=120)
    wait_for(lambda: 'operator restarted once (last exit: SIGKILL)' in first.text(),
             message='up to say the operator was restarted')

    # So does Prometheus, which is sent the scrape targets again (the stable's servers run meanwhile).
    [prometheus] = first.descendants('prometheus', '--config.file')
    prometheus.send_signal(signal.SIGKILL)
    wait_for(lambda: 'prometheus restarted once (last exit: SIGKILL)' in first.text(),
             message='up to say Prometheus was restarted', timeout=120)
    wait_for(lambda: _scraped_servers(prometheus_port), message='the restarted Prometheus to scrape the servers')

    # The whole stack dies, with no chance to clean up, while the last stage trains.
    wait_for(lambda: _running_pod_of_stage(state, 'full'), message='stage 3 to train', timeout=RELEASE_TIMEOUT)
    ports = _ports(state)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(60)
    _nothing_left(state, ports)  # every child died with it

    stacks.append(second := Stack(state, no_leftovers / 'up-2.log', *up_args))
    wait_for(lambda: _serves_releases(state), message='the second up to serve ModelReleases', timeout=300)
    assert (state / 'kubeconfig').read_text() == kubeconfig  # the same address: a user's KUBECONFIG holds
    released = wait_for(lambda: (r := _release(state)).get('status', {}).get('phase') in ('Released', 'RolledBack',
                                                                                         'Failed') and r,
                        message='the release to end', timeout=RELEASE_TIMEOUT)
    status = released['status']
    assert status['phase'] == 'Released', yaml.safe_dump(status)

    # What an uninterrupted run leaves (tests/demo/test_end_to_end.py): two versions promoted, in order.
    assert [v['stage'] for v in status['history']] == ['warmup', 'full']
    by_stage = {record['name']: record for record in status['stages']}
    assert [v['id'] for v in status['history']] == [by_stage[s]['version']['id'] for s in ('warmup', 'full')]
    assert [s['phase'] for s in status['stages']] == ['Succeeded', 'Succeeded', 'Succeeded']
    assert status['stable']['id'] == status['history'][-1]['id']
    with _api(state) as client:
        jobs = kubernetes.client.BatchV1Api(client).list_namespaced_job(
            'default', label_selector='modelrelease.io/release=digits').items
        pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
            'default', label_selector='modelrelease.io/stage=full').items
    assert sorted(job.metadata.labels['modelrelease.io/stage'] for job in jobs) == ['full', 'grow', 'warmup']
    # The Job whose pod was lost with the stack went on with a new pod, in the same Job.
    full_pods = [pod for pod in pods if pod.metadata.labels.get('job-name')]
    assert sorted(pod.status.phase for pod in full_pods) == ['Failed', 'Succeeded']
    lost = next(pod for pod in full_pods if pod.status.phase == 'Failed')
    assert any(c.type == 'DisruptionTarget' and c.status == 'True' for c in lost.status.conditions or [])

    ports = _ports(state)
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(180) == 0, second.text()
    _nothing_left(state, ports)


@pytest.mark.parametrize('stop_signal', [signal.SIGTERM, signal.SIGHUP], ids=['SIGTERM', 'SIGHUP'])
def test_a_signal_to_up_or_demo_leaves_nothing_behind(stop_signal: signal.Signals, stacks: list[Stack],
                                                      no_leftovers: pathlib.Path) -> None:
    state = no_leftovers / 'state'
    stacks.append(up := Stack(state, no_leftovers / 'up.log', 'up', '--no-traffic', '--prometheus-port', '0'))
    wait_for(lambda: _serves_releases(state) and up.descendants('modelrelease', 'run'), message='up to be up',
             timeout=300)
    again = subprocess.run(_local(state, 'up', '--no-traffic'), capture_output=True, text=True, timeout=120,
                           check=False, env={**os.environ, 'COLUMNS': '400'})
    assert again.returncode == 1 and 'Already up' in again.stdout, again.stdout
    assert f'pid {up.process.pid} ' in again.stdout and 'modelrelease_local' in again.stdout
    ports = _ports(state)
    up.process.send_signal(stop_signal)
    assert up.process.wait(180) == 0, up.text()
    _nothing_left(state, ports)

    release_file = no_leftovers / 'release.yaml'
    release_file.write_text(yaml.safe_dump(short_release()))
    demo_args = ('demo', '--no-live', '--release', str(release_file), '--report', str(no_leftovers / 'report'))
    stacks.append(demo := Stack(state, no_leftovers / 'demo.log', *demo_args))
    wait_for(lambda: demo.descendants('modelrelease_trainer', 'train'), message='the demo to train',
             timeout=RELEASE_TIMEOUT)
    second = subprocess.run(_local(state, *demo_args), capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, 'COLUMNS': '400'})
    assert second.returncode == 1 and f'pid {demo.process.pid} ' in second.stdout, second.stdout
    ports = _ports(state / 'demo')
    if stop_signal == signal.SIGTERM:  # as `down` sends it: it finds the demo's stack below the state directory
        down = subprocess.run(_local(state, 'down'), capture_output=True, text=True, timeout=300, check=False)
        assert down.returncode == 0 and f'Stopped (pid {demo.process.pid})' in down.stdout, down.stdout
    else:
        demo.process.send_signal(stop_signal)
    assert demo.process.wait(180) == 128 + stop_signal, demo.text()
    _nothing_left(state, ports)


def test_up_refuses_a_bad_spec_at_apply_and_fails_a_stage_without_data_at_once(stacks: list[Stack],
                                                                               no_leftovers: pathlib.Path) -> None:
    """What a real cluster does with the operator's CRD and Job policy: kubectl apply of a spec the CRD's
    rules refuse fails with the rule's message, and a stage whose data is missing (the trainer exits 65,
    which the Job's podFailurePolicy marks FailJob) fails after one pod, not after backoffLimit retries."""
    state = no_leftovers / 'state'
    stacks.append(up := Stack(state, no_leftovers / 'up.log', 'up', '--no-traffic', '--prometheus-port', '0'))
    wait_for(lambda: _serves_releases(state), message='up to serve ModelReleases', timeout=300)
    env = {**os.environ, 'KUBECONFIG': str(state / 'kubeconfig')}

    falling = short_release()
    falling['spec']['stages'][1]['steps'] = [{'weight': 50, 'duration': '10s'}, {'weight': 25, 'duration': '10s'}]
    refused = subprocess.run(['kubectl', 'apply', '-f', '-'], input=yaml.safe_dump(falling), capture_output=True,
                             text=True, timeout=120, check=False, env=env)
    assert refused.returncode != 0
    assert 'spec.stages[1]' in refused.stderr and 'weights' in refused.stderr, refused.stderr
    with _api(state) as client:
        assert not kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
            'modelrelease.io', 'v1alpha1', 'default', 'modelreleases')['items']

    missing = short_release()
    missing['spec']['stages'][0]['training']['data'] = '/models/nowhere/train.csv'
    applied = subprocess.run(['kubectl', 'apply', '-f', '-'], input=yaml.safe_dump(missing), capture_output=True,
                             text=True, timeout=120, check=False, env=env)
    assert applied.returncode == 0, applied.stderr
    failed = wait_for(lambda: (r := _release(state)).get('status', {}).get('phase') in ('Failed', 'RolledBack')
                      and r, message='the release to fail', timeout=RELEASE_TIMEOUT)
    assert failed['status']['phase'] == 'Failed', yaml.safe_dump(failed['status'])
    with _api(state) as client:
        [job] = kubernetes.client.BatchV1Api(client).list_namespaced_job(
            'default', label_selector='modelrelease.io/release=digits').items
        pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
            'default', label_selector=f'job-name={job.metadata.name}').items
    assert len(pods) == 1 and pods[0].status.phase == 'Failed'
    assert next(c for c in job.status.conditions if c.type == 'Failed').reason == 'PodFailurePolicy'
    ports = _ports(state)
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(180) == 0, up.text()
    _nothing_left(state, ports)
