"""The process runner serves the operator's real Deployments with model-server processes."""
import asyncio
import copy
import http.client
import json
import os
import pathlib
from typing import Any

import pytest

from modelrelease.api.status import ModelVersion
from modelrelease_local.runner import EndpointKey, ProcessDeploymentRunner, fault_env, server_args
from tests.demo.conftest import demo_spec, server_deployment
from tests.waiting import async_wait_for

DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8,
              8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10,
              0, 0, 0]


def _request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={'Content-Type': 'application/json'})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _predict(port: int) -> tuple[int, str]:
    return _request(port, 'POST', '/v1/models/digits:predict', {'instances': [DIGIT_ZERO]})


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def runner(artifact_root: pathlib.Path) -> Any:
    changes: list[dict[EndpointKey, list[int]]] = []
    runner = ProcessDeploymentRunner(artifact_root)
    runner.on_endpoints_changed = lambda: changes.append(runner.endpoints())
    runner.changes = changes  # type: ignore[attr-defined]
    try:
        yield runner
    finally:
        runner.close()


def test_server_args_listen_on_loopback() -> None:
    assert server_args(['serve', '--port', '8501', '--host', '0.0.0.0'], 4242) == [
        'serve', '--port', '4242', '--host', '127.0.0.1']
    assert server_args(['serve', '--port=1'], 7) == ['serve', '--port', '7', '--host', '127.0.0.1']


def test_faults_follow_the_annotations_selector() -> None:
    template = {'metadata': {
        'labels': {'modelrelease.io/track': 'canary', 'modelrelease.io/version': 'full-0123456789ab'},
        'annotations': {'local.modelrelease.io/inject-error-rate': '0.5',
                        'local.modelrelease.io/inject-into': 'track=canary, stage=full'}}}
    assert fault_env(template) == {'INJECT_ERROR_RATE': '0.5'}
    other_stage = copy.deepcopy(template)
    other_stage['metadata']['labels']['modelrelease.io/version'] = 'grow-0123456789ab'
    assert fault_env(other_stage) == {}
    stable = copy.deepcopy(template)
    stable['metadata']['labels']['modelrelease.io/track'] = 'stable'
    assert fault_env(stable) == {}
    assert fault_env({'metadata': {'labels': {}}}) == {}


async def test_start_scale_replace_and_teardown(runner: ProcessDeploymentRunner,
                                                trained: dict[str, ModelVersion]) -> None:
    spec = demo_spec()
    deployment = server_deployment(spec, 'stable', trained['m1'], replicas=2)

    outcome = await runner.rollout(deployment)

    assert outcome.ready, outcome.message
    key = EndpointKey('default', 'digits', 'stable', trained['m1'].id, 'digits')
    ports = runner.endpoints()[key]
    assert len(ports) == 2
    for port in ports:
        status, body = _predict(port)
        assert status == 200 and json.loads(body)['modelVersion'] == trained['m1'].id
        metrics = _request(port, 'GET', '/metrics')[1]
        assert f'track="stable",version="{trained["m1"].id}"' in metrics
    first_pids = {s.process.pid for s in runner.servers('default', 'digits-stable')}

    # Down to one: one of the two keeps serving, the other stops.
    outcome = await runner.rollout(server_deployment(spec, 'stable', trained['m1'], replicas=1, generation=2))
    assert outcome.ready
    (kept,) = runner.servers('default', 'digits-stable')
    assert kept.process.pid in first_pids and runner.endpoints()[key] == [kept.port]
    assert [pid for pid in first_pids if _alive(pid)] == [kept.process.pid]

    # A new template (another model) replaces the process; the old one stops once the new is ready.
    newer = server_deployment(spec, 'stable', trained['m2'], replicas=2, generation=3)
    outcome = await runner.rollout(newer)
    assert outcome.ready
    new_key = EndpointKey('default', 'digits', 'stable', trained['m2'].id, 'digits')
    assert list(runner.endpoints()) == [new_key]
    assert not _alive(kept.process.pid)
    for port in runner.endpoints()[new_key]:
        assert json.loads(_predict(port)[1])['modelVersion'] == trained['m2'].id
    # Endpoints changed at every step; the last change listed the new version only.
    assert runner.changes[-1] == runner.endpoints()  # type: ignore[attr-defined]

    pids = [s.process.pid for s in runner.servers('default', 'digits-stable')]
    await runner.teardown(newer)
    assert runner.endpoints() == {} and runner.servers('default', 'digits-stable') == []
    assert not any(_alive(pid) for pid in pids)


async def test_a_cancelled_rollout_leaves_its_processes_to_the_next(runner: ProcessDeploymentRunner,
                                                                   trained: dict[str, ModelVersion]) -> None:
    spec = demo_spec()
    first = asyncio.create_task(runner.rollout(server_deployment(spec, 'canary', trained['m1'], replicas=1)))
    servers = await async_wait_for(lambda: runner.servers('default', 'digits-canary'), message='a server to start')
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    outcome = await runner.rollout(server_deployment(spec, 'canary', trained['m1'], replicas=1, generation=2))

    assert outcome.ready
    assert [s.process.pid for s in runner.servers('default', 'digits-canary')] == [servers[0].process.pid]


async def test_injected_errors_reach_the_selected_track_only(runner: ProcessDeploymentRunner,
                                                             trained: dict[str, ModelVersion]) -> None:
    spec = demo_spec(serving={'replicas': 2, 'port': 8501, 'template': {'metadata': {'annotations': {
        'local.modelrelease.io/inject-error-rate': '1.0', 'local.modelrelease.io/inject-into': 'track=canary'}}}})
    stable = server_deployment(spec, 'stable', trained['m1'], replicas=1)
    canary = server_deployment(spec, 'canary', trained['m2'], replicas=1)

    outcomes = await asyncio.gather(runner.rollout(stable), runner.rollout(canary))

    assert all(o.ready for o in outcomes)
    by_track = {key.track: ports for key, ports in runner.endpoints().items()}
    assert _predict(by_track['stable'][0])[0] == 200
    assert _predict(by_track['canary'][0])[0] == 500


async def test_a_server_that_cannot_load_its_model_fails_the_rollout(runner: ProcessDeploymentRunner) -> None:
    missing = ModelVersion(id='sha256:' + 'f' * 64, name='gone-ffffffffffff', path='/models/digits/gone',
                           stage='gone')
    outcome = await runner.rollout(server_deployment(demo_spec(), 'canary', missing, replicas=1))

    assert not outcome.ready and outcome.reason == 'ProgressDeadlineExceeded'
    assert 'exited with code 65' in (outcome.message or '')
    assert runner.servers('default', 'digits-canary') == [] and runner.endpoints() == {}

