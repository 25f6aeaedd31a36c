"""Every model-server process of the local stack is a Pod of its Deployment, read over the API."""
import pathlib
from typing import Any

import aiohttp

from modelrelease.api.status import ModelVersion
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.patching import PatchType
from modelrelease_local.runner import ProcessDeploymentRunner
from modelrelease_local.serverpods import PORT_ANNOTATION
from tests.demo.conftest import demo_spec, server_deployment
from tests.waiting import async_wait_for


async def _pods(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    selector = 'modelrelease.io/release=digits,modelrelease.io/track=stable'
    async with http.get(f'{url}/api/v1/namespaces/default/pods', params={'labelSelector': selector}) as response:
        assert response.status == 200
        return (await response.json())['items']


def _ready(pod: dict[str, Any]) -> bool:
    return any(c['type'] == 'Ready' and c['status'] == 'True' for c in (pod.get('status') or {}).get('conditions', []))


async def test_server_processes_show_as_pods_that_follow_scaling_and_deletion(
        artifact_root: pathlib.Path, trained: dict[str, ModelVersion]) -> None:
    runner = ProcessDeploymentRunner(artifact_root)
    try:
        async with EmbeddedApiServer(controllers=[ControllerEmulator(runner=runner)]) as server, \
                aiohttp.ClientSession() as http:
            deployments = server.registry.get('apps', 'v1', 'deployments')
            assert deployments is not None
            body = server_deployment(demo_spec(), 'stable', trained['m1'], replicas=2)
            for field in ('uid', 'generation'):
                del body['metadata'][field]
            deployment = server.store.create(deployments, 'default', body)
            pods: list[dict[str, Any]] = []

            async def poll(condition: Any, message: str) -> None:
                async def check() -> bool:
                    pods[:] = await _pods(http, server.url)
                    return bool(condition(pods))
                await async_wait_for(check, message=message)

            await poll(lambda pods: len(pods) == 2 and all(map(_ready, pods)), 'two ready server Pods')
            ports = sorted(int(p['metadata']['annotations'][PORT_ANNOTATION]) for p in pods)
            assert [ports] == list(runner.endpoints().values())
            for pod in pods:
                assert pod['status']['phase'] == 'Running' and pod['status']['podIP'] == '127.0.0.1'
                [owner] = pod['metadata']['ownerReferences']
                assert (owner['kind'], owner['name'], owner['uid']) == (
                    'Deployment', 'digits-stable', deployment['metadata']['uid'])
                assert pod['metadata']['labels']['pod-template-hash']
                assert pod['spec']['containers'][0]['env'] == body['spec']['template']['spec']['containers'][0]['env']

            server.store.patch(deployments, 'default', 'digits-stable', PatchType.MERGE, {'spec': {'replicas': 1}})
            await poll(lambda pods: len(pods) == 1, 'one server Pod after scaling to 1')
            assert [pods[0]['metadata']['name']] == [s.name for s in runner.servers('default', 'digits-stable')]

            server.store.delete(deployments, 'default', 'digits-stable')
            await poll(lambda pods: not pods and not runner.all_servers(), 'the Pods and servers to go')
    finally:
        runner.close()

