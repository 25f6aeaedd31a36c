"""
One Indexed Job (``spec.completionMode: Indexed``) run to its end, as Kubernetes 1.32 documents it
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode):

- a Pod per completion index 0 … completions-1 (what each carries: :mod:`.jobpods`), at most
  ``parallelism`` at once, the lowest pending indexes first;
- the Job is Complete (after SuccessCriteriaMet) once every index has a succeeded Pod; meanwhile
  ``status.completedIndexes`` lists the indexes done (:mod:`.indexes`);
- a failed Pod goes through the podFailurePolicy: FailJob fails the Job at once; Ignore gives its index
  a new Pod without counting it; Count (or no rule) counts it toward ``backoffLimit``, which, without
  ``backoffLimitPerIndex``, counts the failures of all indexes together: beyond it the Job fails with
  BackoffLimitExceeded. A failing Job stops its running Pods, and they count as failed, as the real
  controller counts every unfinished Pod of a finished Job;
- the back-off is the Job's, as the controller keeps it: before any new Pod, 10 s doubled per failed Pod
  since the last succeeded one, capped at six minutes, from the last failure (scaled by the controller's
  ``backoff_scale``);
- ``activeDeadlineSeconds`` stops every running Pod and fails the Job with DeadlineExceeded;
- over a persisted store, a restarted control plane keeps the indexes of succeeded Pods done, and
  treats Pods still Running as lost (as :mod:`.jobs` does), their indexes getting new Pods.

Not emulated: ``backoffLimitPerIndex``, ``maxFailedIndexes`` and the FailIndex action (which counts as
Count), ``successPolicy``, ``podReplacementPolicy`` (an index gets its new Pod once the old one ended).
"""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING, Any

from modelrelease_local import jobpods, timestamps
from modelrelease_local.indexes import completion_index, format_indexes
from modelrelease_local.outcomes import JobOutcome
from modelrelease_local.podfailure import backoff_delay, decide
from modelrelease_local.resources import ApiResource
from modelrelease_local.statuses import current_status, object_key, without_zeros, write_status
from modelrelease_local.store import ObjectStore

if TYPE_CHECKING:
    from modelrelease_local.jobs import JobController

__all__ = ["IndexedJobRun"]

Object = dict[str, Any]

_DEADLINE_MESSAGE = "Job was active longer than specified deadline"
# A running Pod the controller stops because its Job failed: deleted, its container killed (128 + SIGKILL).
_STOPPED = JobOutcome.failed(exit_code=137)


class IndexedJobRun:
    """The Pods of one Indexed Job, from its first Pod (or a restart) to the Job's end."""

    def __init__(self, controller: JobController, store: ObjectStore, jobs: ApiResource, pods: ApiResource,
                 job: Object) -> None:
        self.controller, self.store, self.jobs, self.pods, self.job = controller, store, jobs, pods, job
        spec = job.get("spec") or {}
        self.key = object_key(job)
        self.completions = int(spec.get("completions") or 1)
        self.parallelism = int(spec.get("parallelism", 1))
        self.backoff_limit = int(spec.get("backoffLimit", 6))
        self.policy = spec.get("podFailurePolicy")
        self.status: Object = {}
        self.succeeded: set[int] = set()
        self.active: dict[int, tuple[Object, asyncio.Task[JobOutcome]]] = {}  # index -> its running Pod
        self.counted = 0  # failures counted toward backoffLimit
        self.failures_since_success = 0  # what the back-off grows with
        self.not_before = 0.0  # loop time before which no new Pod is created (the back-off)

    async def run(self) -> None:
        status = current_status(self.store, self.jobs, self.job)
        if status is None:
            return
        self.status = status
        status.setdefault("startTime", timestamps.now())
        status.setdefault("terminating", 0)
        self.counted = int(status.get("failed") or 0)
        lost = self._adopt()
        deadline = (self.job.get("spec") or {}).get("activeDeadlineSeconds")
        remaining = None if deadline is None else max(0.0, float(deadline) - jobpods.seconds_since(status["startTime"]))
        try:
            async with asyncio.timeout(remaining):
                for orphan in lost:  # run by a previous incarnation of the control plane: gone with it
                    jobpods.mark_lost(self.store, self.pods, orphan)
                    if await self._failed(orphan):
                        return
                await self._run_indexes()
        except TimeoutError:
            stopped = await self._stop_all(JobOutcome.deadline_exceeded())
            self._fail(self.counted + stopped, "DeadlineExceeded", _DEADLINE_MESSAGE)
        finally:
            # The Job was deleted, or the controller stops: its Pods' executions stop with it.
            await self._cancel_all()

    def _adopt(self) -> list[Object]:
        """Take in the Pods an earlier run left: succeeded indexes stay done; the unfinished Pods are returned."""
        namespace, uid = self.key[0], self.job["metadata"]["uid"]
        lost: list[Object] = []
        last_success, failures = "", []
        for pod in (copy.deepcopy(p) for p in self.store.iter_stored(self.pods, namespace) if jobpods.owned_by(p, uid)):
            index = completion_index(pod)
            if index is None or index >= self.completions:
                continue  # not one of this Job's indexes (the real controller deletes such Pods)
            if jobpods.phase(pod) == "Succeeded":
                self.succeeded.add(index)
                last_success = max(last_success, jobpods.finished_at(pod))
            elif jobpods.phase(pod) == "Failed":
                failures.append(jobpods.finished_at(pod))
            else:
                lost.append(pod)
        self.failures_since_success = sum(1 for moment in failures if moment > last_success)
        if self.failures_since_success and not lost:
            self._back_off()
        return lost

    async def _run_indexes(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if len(self.succeeded) >= self.completions:
                self.status["completedIndexes"] = format_indexes(self.succeeded)
                self.controller.complete(self.store, self.jobs, self.job, self.status, succeeded=len(self.succeeded))
                return
            self._start_pending(loop.time())
            if not self._write_status():
                return  # the Job is gone
            backing_off = self._pending() and len(self.active) < self.parallelism and loop.time() < self.not_before
            timeout = self.not_before - loop.time() if backing_off else None
            running = [task for _, task in self.active.values()]
            if not running:
                if timeout is None:  # parallelism 0: no Pod may run
                    await asyncio.Event().wait()
                await asyncio.sleep(timeout or 0.0)
                continue
            await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for index in sorted(index for index, (_, task) in self.active.items() if task.done()):
                pod, task = self.active.pop(index)
                outcome = task.result()
                jobpods.terminate_pod(self.store, self.pods, pod, outcome)
                if outcome.kind == "succeeded":
                    self.succeeded.add(index)
                    self.failures_since_success, self.not_before = 0, 0.0
                elif outcome.kind == "deadline_exceeded":  # a scripted Pod that reached the Job's deadline
                    stopped = await self._stop_all(JobOutcome.deadline_exceeded())
                    return self._fail(self.counted + 1 + stopped, "DeadlineExceeded", _DEADLINE_MESSAGE)
                elif await self._failed(pod):
                    return

    def _pending(self) -> list[int]:
        return [index for index in range(self.completions) if index not in self.succeeded and index not in self.active]

    def _start_pending(self, now: float) -> None:
        if now < self.not_before:
            return
        for index in self._pending()[:max(0, self.parallelism - len(self.active))]:
            pod = jobpods.create_pod(self.store, self.pods, self.job, index)
            jobpods.mark_running(self.store, self.pods, pod)
            task = asyncio.create_task(jobpods.execute(self.controller.executor, self.job, pod),
                                       name=f"pod {self.key[0]}/{pod['metadata']['name']}")
            self.active[index] = (pod, task)

    def _write_status(self) -> bool:
        self.status.update(active=len(self.active), ready=len(self.active), succeeded=len(self.succeeded),
                           failed=self.counted)
        if self.succeeded:
            self.status["completedIndexes"] = format_indexes(self.succeeded)
        return write_status(self.store, self.jobs, self.job, without_zeros(self.status, *jobpods.JOB_COUNTERS))

    async def _failed(self, pod: Object) -> bool:
        """Apply the podFailurePolicy to a failed Pod; True if the Job ended with it."""
        self.failures_since_success += 1
        current = self.store.find(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"]) or pod
        decision = decide(self.policy, current)
        if decision.action != "Ignore":
            self.counted += 1
        if decision.action == "FailJob":
            reason, message = "PodFailurePolicy", decision.message or ""
        elif self.counted > self.backoff_limit:
            reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        else:
            self._back_off()
            return False
        stopped = await self._stop_all(_STOPPED)
        self._fail(self.counted + stopped, reason, message)
        return True

    def _back_off(self) -> None:
        delay = backoff_delay(self.failures_since_success)
        self.controller.backoff_delays.setdefault(self.key, []).append(delay)
        self.not_before = asyncio.get_running_loop().time() + delay * self.controller.backoff_scale

    async def _stop_all(self, outcome: JobOutcome) -> int:
        """Stop every running Pod (ending as ``outcome``, unless it ended meanwhile); the number that failed."""
        entries = sorted(self.active.items())
        self.active.clear()
        for _, (_, task) in entries:
            task.cancel()
        await asyncio.gather(*(task for _, (_, task) in entries), return_exceptions=True)
        stopped = 0
        for index, (pod, task) in entries:
            ended = outcome if task.cancelled() else task.result()
            jobpods.terminate_pod(self.store, self.pods, pod, ended)
            if ended.kind == "succeeded":
                self.succeeded.add(index)
            else:
                stopped += 1
        return stopped

    async def _cancel_all(self) -> None:
        tasks = [task for _, task in self.active.values()]
        self.active.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fail(self, failures: int, reason: str, message: str) -> None:
        self.status["succeeded"] = len(self.succeeded)
        if self.succeeded:
            self.status["completedIndexes"] = format_indexes(self.succeeded)
        self.controller.fail(self.store, self.jobs, self.job, self.status, failures, reason, message)
