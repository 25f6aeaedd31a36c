"""
Emulated Kubernetes controllers for the embedded API server: Jobs (with their Pods) and Deployments.

They run as tasks on the server's loop and talk to the store directly (not over HTTP), so their
writes get resourceVersions and watch events like any other write. What the workloads "do" is
delegated to a :class:`~.outcomes.JobExecutor` and a :class:`~.outcomes.DeploymentRunner`:
scripted by default, replaceable by an executor that runs real processes.

Statuses follow batch/v1 and apps/v1 conventions: zero counters are omitted, conditions keep their
lastTransitionTime while their status does not change, Jobs get SuccessCriteriaMet/FailureTarget
before Complete/Failed (as Kubernetes 1.31+ does). The Job controller lives in :mod:`.jobs`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from modelrelease_local.jobs import JobController
from modelrelease_local.outcomes import DeploymentRunner, JobExecutor, ScriptedRollout
from modelrelease_local.resources import ApiResource
from modelrelease_local.runner import ProcessDeploymentRunner
from modelrelease_local.serverpods import ServerPodMirror
from modelrelease_local.statuses import conditions as _conditions
from modelrelease_local.statuses import current_status as _current_status
from modelrelease_local.statuses import object_key as _key
from modelrelease_local.statuses import without_zeros as _without_zeros
from modelrelease_local.statuses import write_status as _write_status
from modelrelease_local.store import ObjectStore

__all__ = ["ControllerEmulator", "DeploymentController", "JobController"]

logger = logging.getLogger(__name__)
Object = dict[str, Any]
Key = tuple[str, str]
_COUNTERS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")


class DeploymentController:
    """Drives apps/v1 Deployment statuses through a rollout of each new generation. A runner of real
    server processes also gets them mirrored as Pods (see :mod:`.serverpods`); a scripted one has none."""

    def __init__(self, runner: DeploymentRunner | None = None) -> None:
        self.runner: DeploymentRunner = runner or ScriptedRollout()
        self._tasks: dict[Key, tuple[str, int, asyncio.Task[None]]] = {}
        self.pod_mirror = ServerPodMirror(self.runner) if isinstance(self.runner, ProcessDeploymentRunner) else None

    async def run(self, store: ObjectStore) -> None:
        deployments = store.registry.get("apps", "v1", "deployments")
        assert deployments is not None
        watcher = store.watch(deployments)
        background: set[asyncio.Task[None]] = set()
        if self.pod_mirror is not None:
            background.add(asyncio.create_task(self.pod_mirror.run(store), name="server pods"))
        try:
            async for kind, deployment in watcher:
                key, uid = _key(deployment), deployment["metadata"]["uid"]
                generation = int(deployment["metadata"].get("generation") or 1)
                running = self._tasks.get(key)
                if kind == "DELETED":
                    if running is not None:
                        running[2].cancel()
                        self._tasks.pop(key, None)
                    teardown = asyncio.create_task(self.runner.teardown(deployment))
                    background.add(teardown)
                    teardown.add_done_callback(background.discard)
                    continue
                if running is not None and running[:2] == (uid, generation):
                    continue
                if running is None and self._settled(deployment, generation):
                    # Observed by an earlier run of this controller. Its server processes died with the stack
                    # that ran them (a cluster's pods would still run): start them again, at this generation.
                    if self._servers_lost(deployment):
                        task = asyncio.create_task(self._roll_and_record(store, deployments, deployment),
                                                   name=f"restart servers {key}")
                        self._tasks[key] = (uid, generation, task)
                    continue
                if running is not None:
                    running[2].cancel()
                task = asyncio.create_task(self._rollout(store, deployments, deployment), name=f"rollout {key}")
                self._tasks[key] = (uid, generation, task)
        finally:
            watcher.close()
            tasks = [task for *_, task in self._tasks.values()] + list(background)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _settled(deployment: Mapping[str, Any], generation: int) -> bool:
        status = deployment.get("status") or {}
        return int(status.get("observedGeneration") or 0) >= generation and any(
            c.get("type") == "Progressing" and c.get("reason") in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded")
            for c in status.get("conditions") or [])

    def _servers_lost(self, deployment: Mapping[str, Any]) -> bool:
        """A ready Deployment with replicas whose processes this runner does not run."""
        if not isinstance(self.runner, ProcessDeploymentRunner):
            return False  # a scripted rollout has no processes to lose
        namespace, name = _key(deployment)
        ready = any(c.get("type") == "Progressing" and c.get("reason") == "NewReplicaSetAvailable"
                    for c in (deployment.get("status") or {}).get("conditions") or [])
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        return ready and replicas > 0 and not self.runner.servers(namespace, name)

    async def _rollout(self, store: ObjectStore, deployments: ApiResource, deployment: Object) -> None:
        status = _current_status(store, deployments, deployment)
        if status is None:
            return
        generation = int(deployment["metadata"].get("generation") or 1)
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        old_ready = min(int(status.get("readyReplicas") or 0), desired)
        progressing = {
            **status, "observedGeneration": generation, "replicas": old_ready + desired, "updatedReplicas": desired,
            "readyReplicas": old_ready, "availableReplicas": old_ready, "unavailableReplicas": desired,
        }
        progressing["conditions"] = _conditions(status.get("conditions"), [
            ("Available", "True" if old_ready >= desired and desired else "False",
             "MinimumReplicasAvailable" if old_ready >= desired and desired else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if old_ready >= desired and desired
             else "Deployment does not have minimum availability."),
            ("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet is progressing."),
        ], job=False)
        if desired and not _write_status(store, deployments, deployment, _without_zeros(progressing, *_COUNTERS)):
            return
        await self._roll_and_record(store, deployments, deployment)

    async def _roll_and_record(self, store: ObjectStore, deployments: ApiResource, deployment: Object) -> None:
        """Bring the servers up (or down) and write how that ended."""
        generation = int(deployment["metadata"].get("generation") or 1)
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        # Also at zero replicas: a runner of real processes must stop them then.
        outcome = await self.runner.rollout(deployment)
        current = _current_status(store, deployments, deployment)
        if current is None:
            return
        if outcome.ready:
            final = {**current, "observedGeneration": generation, "replicas": desired, "updatedReplicas": desired,
                     "readyReplicas": desired, "availableReplicas": desired, "unavailableReplicas": 0}
            final["conditions"] = _conditions(current.get("conditions"), [
                ("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                ("Progressing", "True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."),
            ], job=False)
        else:
            final = dict(current)
            final["conditions"] = _conditions(current.get("conditions"), [
                (c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
                for c in current.get("conditions") or [] if c.get("type") == "Available"
            ] + [("Progressing", "False", outcome.reason, outcome.message or "")], job=False)
        _write_status(store, deployments, deployment, _without_zeros(final, *_COUNTERS))


class ControllerEmulator:
    """The Job and Deployment controllers together, as one background controller of the server."""

    def __init__(self, executor: JobExecutor | None = None, runner: DeploymentRunner | None = None, *,
                 job_backoff_scale: float = 1.0) -> None:
        # job_backoff_scale: 1 is the Job controller's own back-off (10 s, 20 s, … 6 min); tests shorten it.
        self.jobs = JobController(executor, backoff_scale=job_backoff_scale)
        self.deployments = DeploymentController(runner)

    @property
    def executor(self) -> JobExecutor:
        return self.jobs.executor

    @property
    def runner(self) -> DeploymentRunner:
        return self.deployments.runner

    async def run(self, store: ObjectStore) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.jobs.run(store))
            group.create_task(self.deployments.run(store))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(executor={self.executor!r}, runner={self.runner!r})"

