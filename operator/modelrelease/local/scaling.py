"""
Scale-to-zero for the process runner.

The emulated Deployment controller asks its runner to roll out a generation only when the
Deployment wants at least one replica: at ``replicas: 0`` it writes the status itself. A runner of
real processes must still stop them then (the stable track at canary weight 100, the canary after
a promotion or a rollback), or they would keep serving traffic. :class:`ZeroReplicaController`
watches Deployments and hands every one that wants no replicas to the runner, which stops its
processes and drops their endpoints.
"""
import asyncio
import logging
from typing import Any

from modelrelease.local.resources import ApiResource
from modelrelease.local.runner import ProcessDeploymentRunner
from modelrelease.local.store import ObjectStore

__all__ = ['ZeroReplicaController']

logger = logging.getLogger(__name__)


class ZeroReplicaController:
    """A background controller of the embedded API server (see ``EmbeddedApiServer(controllers=...)``)."""

    def __init__(self, runner: ProcessDeploymentRunner) -> None:
        self.runner = runner
        self._tasks: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def run(self, store: ObjectStore) -> None:
        deployments = store.registry.get('apps', 'v1', 'deployments')
        assert deployments is not None
        watcher = store.watch(deployments)
        try:
            async for kind, deployment in watcher:
                meta = deployment['metadata']
                key = (meta.get('namespace') or 'default', meta['name'])
                wants_none = int((deployment.get('spec') or {}).get('replicas', 1)) == 0
                if kind == 'DELETED' or not wants_none or not self.runner.servers(*key):
                    continue
                previous = self._tasks.get(key)
                if previous is not None and not previous.done():
                    continue  # already stopping them
                self._tasks[key] = asyncio.create_task(self._stop_all(store, deployments, key),
                                                       name=f'scale to zero {key}')
        finally:
            watcher.close()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_all(self, store: ObjectStore, deployments: ApiResource, key: tuple[str, str]) -> None:
        current = store.find(deployments, *key)  # events lag: act on what is stored now
        if current is None or int((current.get('spec') or {}).get('replicas', 1)) != 0:
            return
        outcome = await self.runner.rollout(current)  # zero wanted: the runner stops them all
        if not outcome.ready:
            logger.warning('Scaling %s/%s to zero: %s', *key, outcome.message)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
