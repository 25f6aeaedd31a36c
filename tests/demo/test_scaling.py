"""Scale-to-zero: the emulated Deployment controller hands it to the process runner, which stops its servers."""
import pathlib

from modelrelease.api.status import ModelVersion
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.patching import PatchType
from modelrelease_local.runner import ProcessDeploymentRunner
from tests.demo.conftest import demo_spec, server_deployment
from tests.waiting import async_wait_for


async def test_a_deployment_scaled_to_zero_stops_its_servers(artifact_root: pathlib.Path,
                                                             trained: dict[str, ModelVersion]) -> None:
    runner = ProcessDeploymentRunner(artifact_root)
    controllers = [ControllerEmulator(runner=runner)]
    try:
        async with EmbeddedApiServer(controllers=controllers) as server:
            deployments = server.registry.get('apps', 'v1', 'deployments')
            assert deployments is not None
            body = server_deployment(demo_spec(), 'stable', trained['m1'], replicas=2)
            for field in ('uid', 'generation'):
                del body['metadata'][field]
            server.store.create(deployments, 'default', body)
            await async_wait_for(lambda: sum(map(len, runner.endpoints().values())) == 2,
                                 message='two ready servers')
            processes = [s.process for s in runner.servers('default', 'digits-stable')]

            server.store.patch(deployments, 'default', 'digits-stable', PatchType.MERGE, {'spec': {'replicas': 0}})

            await async_wait_for(lambda: runner.endpoints() == {} and all(p.poll() is not None for p in processes),
                                 message='the servers to stop')

            # The runner stops the processes before the controller writes the status, so that comes a moment later.
            def settled_at_zero() -> bool:
                status = server.store.get(deployments, 'default', 'digits-stable')['status']
                return status.get('observedGeneration') == 2 and not status.get('readyReplicas')

            await async_wait_for(settled_at_zero, message='the Deployment status to report zero ready replicas')
    finally:
        runner.close()
