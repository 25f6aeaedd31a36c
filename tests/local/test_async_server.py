"""The embedded API server on the test's own event loop (no threads), with aiohttp as the client."""
import asyncio
import json

import aiohttp

from modelrelease.local.apiserver import EmbeddedApiServer
from modelrelease.local.controllers import ControllerEmulator
from modelrelease.local.outcomes import JobOutcome, ScriptedExecutor
from tests.local.conftest import job_body


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
