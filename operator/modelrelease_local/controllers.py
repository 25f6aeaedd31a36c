"""
Emulated Kubernetes controllers for the embedded API server: Jobs (with their Pods) and Deployments.

They run as tasks on the server's loop and talk to the store directly (not over HTTP), so their
writes get resourceVersions and watch events like any other write. What the workloads "do" is
delegated to a :class:`~.outcomes.JobExecutor` and a :class:`~.outcomes.DeploymentRunner`:
scripted by default, replaceable by an executor that runs real processes.

Statuses follow batch/v1 and apps/v1 conventions: zero counters are omitted, conditions keep their
lastTransitionTime while their status does not change, Jobs get SuccessCriteriaMet/FailureTarget
before Complete/Failed (as Kubernetes 1.31+ does).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from collections.abc import Mapping
from typing import Any

from modelrelease_local import errors, timestamps
from modelrelease_local.outcomes import (
    DeploymentRunner,
    JobExecutor,
    JobOutcome,
    ScriptedExecutor,
    ScriptedRollout,
)
from modelrelease_local.resources import ApiResource
from modelrelease_local.runner import ProcessDeploymentRunner
from modelrelease_local.serverpods import ServerPodMirror
from modelrelease_local.store import ObjectStore

__all__ = ["ControllerEmulator", "DeploymentController", "JobController"]

logger = logging.getLogger(__name__)
Object = dict[str, Any]
Key = tuple[str, str]


def _key(obj: Mapping[str, Any]) -> Key:
    return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])


def _conditions(old: list[Object] | None, new: list[tuple[str, str, str, str]], *, job: bool) -> list[Object]:
    """Build conditions; the ones whose status did not change keep their lastTransitionTime."""
    now = timestamps.now()
    previous = {condition.get("type"): condition for condition in old or []}
    result = []
    for kind, status, reason, message in new:
        before = previous.get(kind)
        changed = before is None or before.get("status") != status
        condition = {"type": kind, "status": status, "reason": reason, "message": message,
                     "lastTransitionTime": now if changed else before.get("lastTransitionTime", now)}  # type: ignore[union-attr]
        condition["lastProbeTime" if job else "lastUpdateTime"] = now
        result.append(condition)
    return result


def _without_zeros(status: Object, *names: str) -> Object:
    return {key: value for key, value in status.items() if not (key in names and not value)}


def _write_status(store: ObjectStore, resource: ApiResource, obj: Mapping[str, Any], status: Object) -> bool:
    """Replace an object's status; False if the object is gone (deleted meanwhile)."""
    namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
    try:
        store.replace(resource, namespace, name, {"status": status}, subresource="status")
    except errors.ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _current_status(store: ObjectStore, resource: ApiResource, obj: Mapping[str, Any]) -> Object | None:
    found = store.find(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"])
    if found is None or found["metadata"]["uid"] != obj["metadata"]["uid"]:
        return None
    return dict(found.get("status") or {})


class JobController:
    """Runs each batch/v1 Job as one Pod at a time, retrying failures up to spec.backoffLimit."""

    def __init__(self, executor: JobExecutor | None = None, *, retry_backoff: float = 0.0) -> None:
        self.executor: JobExecutor = executor or ScriptedExecutor()
        self.retry_backoff = retry_backoff
        self._tasks: dict[Key, tuple[str, asyncio.Task[None]]] = {}

    async def run(self, store: ObjectStore) -> None:
        jobs = store.registry.get("batch", "v1", "jobs")
        pods = store.registry.get("", "v1", "pods")
        assert jobs is not None and pods is not None
        watcher = store.watch(jobs)
        try:
            async for kind, job in watcher:
                key, uid = _key(job), job["metadata"]["uid"]
                running = self._tasks.get(key)
                if running is not None and (kind == "DELETED" or running[0] != uid):
                    running[1].cancel()
                    self._tasks.pop(key, None)
                    running = None
                if kind == "DELETED" or running is not None:
                    continue
                # Events lag behind the store: judge by the current state, not by a stale event.
                current = store.find(jobs, key[0], key[1])
                if current is None or current["metadata"]["uid"] != uid or self._finished(current):
                    continue
                if (job.get("spec") or {}).get("suspend"):
                    continue
                task = asyncio.create_task(self._run_job(store, jobs, pods, job), name=f"job {key}")
                task.add_done_callback(functools.partial(self._forget, key, uid))
                self._tasks[key] = (uid, task)
        finally:
            watcher.close()
            tasks = [task for _, task in self._tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, key: Key, uid: str, _: object = None) -> None:
        if self._tasks.get(key, ("", None))[0] == uid:
            del self._tasks[key]

    @staticmethod
    def _finished(job: Mapping[str, Any]) -> bool:
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])

    async def _run_job(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource, job: Object) -> None:
        spec = job.get("spec") or {}
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        status = _current_status(store, jobs, job)
        if status is None:
            return
        status.setdefault("startTime", timestamps.now())
        failures = int(status.get("failed") or 0)
        pod: Object | None = None
        try:
            async with asyncio.timeout(float(deadline) if deadline else None):
                while True:
                    status.update(active=1, ready=0, failed=failures)
                    if not _write_status(store, jobs, job, _without_zeros(status, "active", "failed")):
                        return
                    pod = self._create_pod(store, pods, job)
                    outcome = await self._run_pod(store, jobs, pods, job, pod, status)
                    if outcome.kind == "succeeded":
                        return self._complete(store, jobs, job, status)
                    if outcome.kind == "deadline_exceeded":
                        return self._fail(store, jobs, job, status, failures + 1, "DeadlineExceeded",
                                          "Job was active longer than specified deadline")
                    failures += 1
                    if failures > backoff_limit:
                        return self._fail(store, jobs, job, status, failures, "BackoffLimitExceeded",
                                          "Job has reached the specified backoff limit")
                    await asyncio.sleep(self.retry_backoff)
        except TimeoutError:
            if pod is not None:
                self._terminate_pod(store, pods, pod, JobOutcome.deadline_exceeded())
            self._fail(store, jobs, job, status, failures + 1, "DeadlineExceeded",
                       "Job was active longer than specified deadline")

    @staticmethod
    def _create_pod(store: ObjectStore, pods: ApiResource, job: Object) -> Object:
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        labels = {**(template_meta.get("labels") or {}), "job-name": name, "batch.kubernetes.io/job-name": name,
                  "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid}
        metadata: Object = {
            "generateName": f"{name}-", "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                 "controller": True, "blockOwnerDeletion": True}],
        }
        if template_meta.get("annotations"):
            metadata["annotations"] = template_meta["annotations"]
        pod_spec = {**(template.get("spec") or {}), "nodeName": "embedded-node"}
        return store.create(pods, job["metadata"]["namespace"], {"metadata": metadata, "spec": pod_spec})

    async def _run_pod(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource, job: Object, pod: Object,
                       job_status: Object) -> JobOutcome:
        now = timestamps.now()
        containers = (pod.get("spec") or {}).get("containers") or []
        pod_status = {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "qosClass": "BestEffort",
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now, "lastProbeTime": None}
                           for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "started": True,
                 "restartCount": 0, "state": {"running": {"startedAt": now}}} for c in containers],
        }
        _write_status(store, pods, pod, pod_status)
        job_status["ready"] = 1
        _write_status(store, jobs, job, _without_zeros(job_status, "active", "failed"))
        try:
            outcome = await self.executor.start(job, pod)
            while outcome.kind == "run_forever":  # an executor may say so: it ends only by cancellation
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("The job executor failed for %s/%s", *_key(job))
            outcome = JobOutcome.failed(exit_code=128, message=f"the executor failed: {exc!r}")
        self._terminate_pod(store, pods, pod, outcome)
        job_status["ready"] = 0
        return outcome

    @staticmethod
    def _terminate_pod(store: ObjectStore, pods: ApiResource, pod: Object, outcome: JobOutcome) -> None:
        status = _current_status(store, pods, pod)
        if status is None:
            return
        now = timestamps.now()
        status["phase"] = "Succeeded" if outcome.kind == "succeeded" else "Failed"
        if outcome.kind == "deadline_exceeded":
            status.update(reason="DeadlineExceeded", message="Job was active longer than specified deadline")
        for condition in status.get("conditions") or []:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", lastTransitionTime=now,
                                 reason="PodCompleted" if outcome.kind == "succeeded" else "PodFailed")
        for index, container in enumerate(status.get("containerStatuses") or []):
            started = (container.get("state") or {}).get("running", {}).get("startedAt", now)
            terminated = {"exitCode": outcome.exit_code if index == 0 else 0,
                          "reason": outcome.container_reason if index == 0 else "Completed",
                          "startedAt": started, "finishedAt": now}
            if index == 0 and outcome.message is not None:
                terminated["message"] = outcome.message
            container.update(ready=False, started=False, state={"terminated": terminated})
        _write_status(store, pods, pod, status)

    @staticmethod
    def _complete(store: ObjectStore, jobs: ApiResource, job: Object, status: Object) -> None:
        status.update(active=0, ready=0, succeeded=1, completionTime=timestamps.now(), uncountedTerminatedPods={})
        status["conditions"] = _conditions(status.get("conditions"), [
            ("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
            ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
        ], job=True)
        _write_status(store, jobs, job, _without_zeros(status, "active", "failed", "succeeded"))

    @staticmethod
    def _fail(store: ObjectStore, jobs: ApiResource, job: Object, status: Object, failures: int,
              reason: str, message: str) -> None:
        status.update(active=0, ready=0, failed=failures, uncountedTerminatedPods={})
        status["conditions"] = _conditions(status.get("conditions"), [
            ("FailureTarget", "True", reason, message),
            ("Failed", "True", reason, message),
        ], job=True)
        _write_status(store, jobs, job, _without_zeros(status, "active", "failed", "succeeded"))


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
                    continue  # observed by an earlier run of this controller
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
        counters = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")
        if desired and not _write_status(store, deployments, deployment, _without_zeros(progressing, *counters)):
            return
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
        _write_status(store, deployments, deployment, _without_zeros(final, *counters))


class ControllerEmulator:
    """The Job and Deployment controllers together, as one background controller of the server."""

    def __init__(self, executor: JobExecutor | None = None, runner: DeploymentRunner | None = None, *,
                 retry_backoff: float = 0.0) -> None:
        self.jobs = JobController(executor, retry_backoff=retry_backoff)
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

