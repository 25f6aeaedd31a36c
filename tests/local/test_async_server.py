"""The embedded API server on the test's own event loop (no threads), with aiohttp as the client."""
import asyncio
import json
import pathlib
import subprocess
import sys
import urllib.request

import aiohttp
import yaml

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.outcomes import JobOutcome, ScriptedExecutor
from tests.local.conftest import job_body
from tests.waiting import wait_for


async def test_in_loop_server_with_controllers_and_a_watch() -> None:
    executor = ScriptedExecutor(lambda job: JobOutcome.run_forever())
    async with (EmbeddedApiServer(controllers=[ControllerEmulator(executor)]) as server,
                aiohttp.ClientSession(server.url) as session):
        async with session.post('/apis/batch/v1/namespaces/ml/jobs', json=job_body('j')) as response:
            assert response.status == 201

        events = []
        async with session.get('/apis/batch/v1/namespaces/ml/jobs', params={'watch': 'true'}) as stream:
            async with asyncio.timeout(30):
                async for line in stream.content:
                    event = json.loads(line)
                    events.append(event['type'])
                    if len(events) == 1:  # the initial state is seen: now let the job end
                        executor.resolve('ml', 'j', JobOutcome.succeeded('ok'))
                    conditions = (event['object'].get('status') or {}).get('conditions') or []
                    if any(c['type'] == 'Complete' for c in conditions):
                        break
        assert events[0] == 'ADDED' and events[-1] == 'MODIFIED'

        pods = server.store.list_objects(server.registry.get('', 'v1', 'pods'), 'ml')  # type: ignore[arg-type]
        assert pods[0]['status']['containerStatuses'][0]['state']['terminated']['message'] == 'ok'
    assert not server.running


def test_controllers_attach_to_a_running_server() -> None:
    with EmbeddedApiServer() as server:
        jobs = server.resource('batch/v1', 'jobs')
        server.call(server.store.create, jobs, 'ml', job_body('early'))
        server.attach(ControllerEmulator(ScriptedExecutor(lambda job: JobOutcome.succeeded('late but done'))))
        def succeeded() -> int | None:
            job = server.get_object('batch/v1', 'jobs', 'ml', 'early') or {}
            return (job.get('status') or {}).get('succeeded')

        wait_for(succeeded, message='the job created before the controllers to complete')
        [pod] = server.list_objects('v1', 'pods', 'ml')
        assert pod['status']['containerStatuses'][0]['state']['terminated']['message'] == 'late but done'


def test_serving_from_a_subprocess(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / 'kubeconfig'
    process = subprocess.Popen([sys.executable, '-m', 'modelrelease_local.apiserver', '--kubeconfig', str(kubeconfig)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith('http://127.0.0.1:')
        assert yaml.safe_load(kubeconfig.read_text())['clusters'][0]['cluster']['server'] == url
        with urllib.request.urlopen(f'{url}/api/v1/namespaces/default', timeout=30) as response:
            assert json.loads(response.read())['metadata']['name'] == 'default'
    finally:
        process.terminate()
        process.wait(timeout=30)
