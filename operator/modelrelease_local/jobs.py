"""
The emulated batch/v1 Job controller, as Kubernetes 1.32 documents it
(https://kubernetes.io/docs/concepts/workloads/controllers/job/). A NonIndexed Job (completions 1,
parallelism 1) runs one Pod at a time, here; an Indexed Job runs a Pod per completion index
(:mod:`.indexed`). For both:

- a failed Pod goes through ``spec.podFailurePolicy`` (:mod:`.podfailure`): FailJob ends the Job at
  once (reason ``PodFailurePolicy``), Ignore replaces the Pod without counting it, Count (or no rule)
  counts it toward ``backoffLimit`` (beyond it: ``BackoffLimitExceeded``);
- each replacement Pod waits the controller's back-off, 10 s doubled per failed Pod, capped at six
  minutes; ``backoff_scale`` shortens it for tests (0: at once), and :attr:`JobController.backoff_delays`
  records the documented delay chosen before each replacement;
- ``activeDeadlineSeconds`` counts from ``status.startTime``: then the running Pods are terminated and
  the Job fails with ``DeadlineExceeded``;
- ``ttlSecondsAfterFinished``: the Job is deleted that long after it finished (foreground, so the
  garbage collector removes its Pods first).

Deviation: the controller keeps a terminated Pod in the API (the real one deletes the Pods it stops on
a deadline or when the Job fails), so that the Pod's last state stays readable.

A control plane that restarts over a persisted store finds Pods still Running that no controller of
this process runs: they are treated as a lost node's Pods are (Failed, with a ``DisruptionTarget``
condition of reason ``DeletionByTaintManager``), and the Job's podFailurePolicy decides what follows.

An executor may define ``job_ended(job)``: it is called once a Job's run is over (finished, deleted, or
the controller stopping), so that what it keeps for the Job's Pods (ports, for one) can go.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from collections.abc import Mapping
from typing import Any

from modelrelease_local import errors, jobpods, timestamps
from modelrelease_local.indexed import IndexedJobRun
from modelrelease_local.indexes import is_indexed
from modelrelease_local.outcomes import JobExecutor, JobOutcome, ScriptedExecutor
from modelrelease_local.podfailure import backoff_delay, decide
from modelrelease_local.resources import ApiResource
from modelrelease_local.statuses import conditions, current_status, object_key, without_zeros, write_status
from modelrelease_local.store import ObjectStore

__all__ = ["JobController"]

logger = logging.getLogger(__name__)
Object = dict[str, Any]
Key = tuple[str, str]



class JobController:
    """Runs each batch/v1 Job's Pods under its podFailurePolicy, backoffLimit and deadline."""

    def __init__(self, executor: JobExecutor | None = None, *, backoff_scale: float = 1.0) -> None:
        if backoff_scale < 0:
            raise ValueError(f"backoff_scale must be 0 or more (1 is Kubernetes' own back-off), not {backoff_scale}")
        self.executor: JobExecutor = executor or ScriptedExecutor()
        self.backoff_scale = backoff_scale
        # (namespace, job name) -> the documented back-off (seconds, before scaling) chosen before each replacement.
        self.backoff_delays: dict[Key, list[float]] = {}
        self._tasks: dict[Key, tuple[str, asyncio.Task[None]]] = {}
        self._ttl_timers: dict[Key, tuple[str, asyncio.TimerHandle]] = {}

    async def run(self, store: ObjectStore) -> None:
        jobs = store.registry.get("batch", "v1", "jobs")
        pods = store.registry.get("", "v1", "pods")
        assert jobs is not None and pods is not None
        watcher = store.watch(jobs)
        try:
            async for kind, job in watcher:
                key, uid = object_key(job), job["metadata"]["uid"]
                running = self._tasks.get(key)
                if running is not None and (kind == "DELETED" or running[0] != uid):
                    running[1].cancel()
                    self._tasks.pop(key, None)
                    running = None
                if kind == "DELETED":
                    self._cancel_ttl(key)
                    continue
                if running is not None:
                    continue
                # Events lag behind the store: judge by the current state, not by a stale event.
                current = store.find(jobs, key[0], key[1])
                if current is None or current["metadata"]["uid"] != uid:
                    continue
                if self._finished(current):
                    self._schedule_ttl(store, jobs, current)
                    continue
                if (job.get("spec") or {}).get("suspend"):
                    continue
                task = asyncio.create_task(self._run_job(store, jobs, pods, current), name=f"job {key}")
                task.add_done_callback(functools.partial(self._forget, key, uid))
                self._tasks[key] = (uid, task)
        finally:
            watcher.close()
            for _, handle in self._ttl_timers.values():
                handle.cancel()
            self._ttl_timers.clear()
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

    # ttlSecondsAfterFinished.

    def _schedule_ttl(self, store: ObjectStore, jobs: ApiResource, job: Mapping[str, Any]) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        key, uid = object_key(job), job["metadata"]["uid"]
        if ttl is None or self._ttl_timers.get(key, ("", None))[0] == uid:
            return
        status = job.get("status") or {}
        finished_at = status.get("completionTime") or next(
            (c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("type") == "Failed"), None)
        delay = max(0.0, float(ttl) - jobpods.seconds_since(finished_at))
        handle = asyncio.get_running_loop().call_later(delay, self._expire, store, jobs, key, uid)
        self._cancel_ttl(key)
        self._ttl_timers[key] = (uid, handle)

    def _cancel_ttl(self, key: Key) -> None:
        timer = self._ttl_timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()

    def _expire(self, store: ObjectStore, jobs: ApiResource, key: Key, uid: str) -> None:
        self._ttl_timers.pop(key, None)
        try:
            # As the TTL-after-finished controller does: foreground, with the uid as a precondition.
            store.delete(jobs, key[0], key[1], {"propagationPolicy": "Foreground", "preconditions": {"uid": uid}})
        except errors.ApiError as exc:
            if exc.status not in (404, 409):
                raise

    # One Job.

    async def _run_job(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource, job: Object) -> None:
        try:
            if is_indexed(job):
                await IndexedJobRun(self, store, jobs, pods, job).run()
            else:
                await self._run_one_at_a_time(store, jobs, pods, job)
        finally:
            job_ended = getattr(self.executor, "job_ended", None)
            if job_ended is not None:
                job_ended(job)

    async def _run_one_at_a_time(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource,
                                 job: Object) -> None:
        spec = job.get("spec") or {}
        key, uid = object_key(job), job["metadata"]["uid"]
        status = current_status(store, jobs, job)
        if status is None:
            return
        status.setdefault("startTime", timestamps.now())
        status.setdefault("terminating", 0)
        counted = int(status.get("failed") or 0)
        own = [copy.deepcopy(pod) for pod in store.iter_stored(pods, key[0]) if jobpods.owned_by(pod, uid)]
        failed_pods = sum(1 for pod in own if (pod.get("status") or {}).get("phase") == "Failed")
        lost = [pod for pod in own if (pod.get("status") or {}).get("phase") in (None, "Pending", "Running")]
        deadline = spec.get("activeDeadlineSeconds")
        remaining = None if deadline is None else max(0.0, float(deadline) - jobpods.seconds_since(status["startTime"]))
        pod: Object | None = None
        try:
            async with asyncio.timeout(remaining):
                for orphan in lost:  # run by a previous incarnation of the control plane: gone with it
                    jobpods.mark_lost(store, pods, orphan)
                    failed_pods += 1
                    counted, finished = self._judge_failure(store, jobs, pods, job, orphan, status, counted)
                    if finished:
                        return
                while True:
                    if failed_pods:
                        delay = backoff_delay(failed_pods)
                        self.backoff_delays.setdefault(key, []).append(delay)
                        await asyncio.sleep(delay * self.backoff_scale)
                    status.update(active=1, ready=0, failed=counted)
                    if not write_status(store, jobs, job, without_zeros(status, *jobpods.JOB_COUNTERS)):
                        return
                    pod = jobpods.create_pod(store, pods, job)
                    outcome = await self._run_pod(store, jobs, pods, job, pod, status)
                    finished_pod, pod = pod, None
                    if outcome.kind == "succeeded":
                        return self.complete(store, jobs, job, status)
                    if outcome.kind == "deadline_exceeded":
                        return self.fail(store, jobs, job, status, counted + 1, "DeadlineExceeded",
                                         "Job was active longer than specified deadline")
                    failed_pods += 1
                    counted, finished = self._judge_failure(store, jobs, pods, job, finished_pod, status, counted)
                    if finished:
                        return
        except TimeoutError:
            if pod is not None:
                jobpods.terminate_pod(store, pods, pod, JobOutcome.deadline_exceeded())
                counted += 1
            self.fail(store, jobs, job, status, counted, "DeadlineExceeded",
                      "Job was active longer than specified deadline")

    def _judge_failure(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource, job: Object, pod: Object,
                       status: Object, counted: int) -> tuple[int, bool]:
        """Apply the podFailurePolicy to a failed Pod: the failures counted now, and whether the Job ended."""
        spec = job.get("spec") or {}
        current = store.find(pods, pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
        decision = decide(spec.get("podFailurePolicy"), current)
        if decision.action != "Ignore":
            counted += 1
        if decision.action == "FailJob":
            self.fail(store, jobs, job, status, counted, "PodFailurePolicy", decision.message or "")
            return counted, True
        if counted > int(spec.get("backoffLimit", 6)):
            self.fail(store, jobs, job, status, counted, "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit")
            return counted, True
        status.update(active=0, ready=0, failed=counted)
        return counted, not write_status(store, jobs, job, without_zeros(status, *jobpods.JOB_COUNTERS))

    async def _run_pod(self, store: ObjectStore, jobs: ApiResource, pods: ApiResource, job: Object, pod: Object,
                       job_status: Object) -> JobOutcome:
        jobpods.mark_running(store, pods, pod)
        job_status["ready"] = 1
        write_status(store, jobs, job, without_zeros(job_status, *jobpods.JOB_COUNTERS))
        outcome = await jobpods.execute(self.executor, job, pod)
        jobpods.terminate_pod(store, pods, pod, outcome)
        job_status["ready"] = 0
        return outcome

    # How a Job ends (both completion modes).

    def complete(self, store: ObjectStore, jobs: ApiResource, job: Object, status: Object, *,
                 succeeded: int = 1) -> None:
        """Complete (with SuccessCriteriaMet): every completion succeeded."""
        status.update(active=0, ready=0, terminating=0, succeeded=succeeded, completionTime=timestamps.now(),
                      uncountedTerminatedPods={})
        status["conditions"] = conditions(status.get("conditions"), [
            ("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
            ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods"),
        ], job=True)
        self._finish(store, jobs, job, status)

    def fail(self, store: ObjectStore, jobs: ApiResource, job: Object, status: Object, failures: int,
             reason: str, message: str) -> None:
        """Failed (with FailureTarget), for this reason; ``failures`` counts the Pods it stopped too."""
        status.update(active=0, ready=0, terminating=0, failed=failures, uncountedTerminatedPods={})
        status["conditions"] = conditions(status.get("conditions"), [
            ("FailureTarget", "True", reason, message),
            ("Failed", "True", reason, message),
        ], job=True)
        self._finish(store, jobs, job, status)

    def _finish(self, store: ObjectStore, jobs: ApiResource, job: Object, status: Object) -> None:
        if write_status(store, jobs, job, without_zeros(status, *jobpods.JOB_COUNTERS)):
            current = store.find(jobs, job["metadata"].get("namespace"), job["metadata"]["name"])
            if current is not None and current["metadata"]["uid"] == job["metadata"]["uid"]:
                self._schedule_ttl(store, jobs, current)
