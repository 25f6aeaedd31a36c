"""
The seams between the emulated controllers and whatever "runs" the workloads.

The Job controller asks a :class:`JobExecutor` to run each Pod of a Job and report how it ended
(:class:`JobOutcome`); the Deployment controller asks a :class:`DeploymentRunner` to roll out each
new generation and report whether it became ready (:class:`RolloutOutcome`). The scripted
implementations here decide by rules and test calls; a local executor that runs real processes
implements the same protocols.

Cancellation is the stop signal: when a Job is deleted or exceeds its deadline, the executor's
``start()`` is cancelled (a process-based executor must kill its process then); when a Deployment
changes or is deleted, its pending ``rollout()`` is cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from modelrelease_local.indexes import completion_index

__all__ = [
    "DISRUPTION_MESSAGES", "DeploymentRunner", "JobExecutor", "JobOutcome", "RolloutOutcome", "ScriptedExecutor",
    "ScriptedRollout",
]

Object = dict[str, Any]
OutcomeKind = Literal["succeeded", "failed", "oom_killed", "deadline_exceeded", "disrupted", "run_forever"]

# The messages Kubernetes writes on a DisruptionTarget condition, by its reason.
DISRUPTION_MESSAGES = {
    "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
    "EvictionByEvictionAPI": "Eviction API: evicting",
    "PreemptionByScheduler": "default-scheduler: preempting to accommodate a higher priority pod",
    "DeletionByPodGC": "PodGC: node no longer exists",
    "TerminationByKubelet": "The node was low on resource: memory.",
}


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """How one Pod of a Job ends (or that it does not end on its own)."""
    kind: OutcomeKind
    message: str | None = None  # the container's termination message (state.terminated.message)
    exit_code: int = 0
    delay: float = 0.0  # seconds to stay Running before ending (scripted executor only)
    disruption: str | None = None  # the DisruptionTarget condition's reason, for a disrupted Pod

    @classmethod
    def succeeded(cls, message: str | None = None, *, delay: float = 0.0) -> JobOutcome:
        return cls("succeeded", message, 0, delay)

    @classmethod
    def failed(cls, exit_code: int = 1, message: str | None = None, *, delay: float = 0.0) -> JobOutcome:
        return cls("failed", message, exit_code, delay)

    @classmethod
    def oom_killed(cls, message: str | None = None, *, delay: float = 0.0) -> JobOutcome:
        return cls("oom_killed", message, 137, delay)

    @classmethod
    def deadline_exceeded(cls, *, delay: float = 0.0) -> JobOutcome:
        return cls("deadline_exceeded", None, 137, delay)

    @classmethod
    def disrupted(cls, reason: str = "EvictionByEvictionAPI", *, exit_code: int = 137,
                  delay: float = 0.0) -> JobOutcome:
        """The Pod was killed from outside (eviction, preemption, a lost node): it gets a DisruptionTarget
        condition with this reason, which a podFailurePolicy may ignore."""
        if reason not in DISRUPTION_MESSAGES:
            raise ValueError(f"disrupted(reason={reason!r}): the reason must be one Kubernetes writes on a"
                             f" DisruptionTarget condition: {', '.join(sorted(DISRUPTION_MESSAGES))}")
        return cls("disrupted", None, exit_code, delay, reason)

    @classmethod
    def run_forever(cls) -> JobOutcome:
        return cls("run_forever")

    @property
    def container_reason(self) -> str:
        return {"succeeded": "Completed", "oom_killed": "OOMKilled", "deadline_exceeded": "DeadlineExceeded"}.get(
            self.kind, "Error")


class JobExecutor(Protocol):
    """Runs the Pods of Jobs. It may also define ``job_ended(job)``, which the Job controller calls once
    the Job's run is over (finished, deleted, or the controller stopping)."""

    async def start(self, job: Mapping[str, Any], pod: Mapping[str, Any]) -> JobOutcome:
        """Run the Pod (already Running in the API) to its end; return how it ended."""


@dataclasses.dataclass(frozen=True)
class RolloutOutcome:
    ready: bool
    reason: str = "NewReplicaSetAvailable"
    message: str | None = None


class DeploymentRunner(Protocol):
    async def rollout(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        """Bring the Deployment's current generation up; return when it is ready or has failed."""

    async def teardown(self, deployment: Mapping[str, Any]) -> None:
        """The Deployment is deleted: stop whatever runs for it."""


ResolutionKey = tuple[str, str] | tuple[str, str, int]  # namespace, name (and a completion index)


class _Resolutions:
    """Thread-safe hand-over of test decisions to coroutines waiting on the controllers' loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._early: dict[ResolutionKey, Any] = {}
        self._waiting: dict[ResolutionKey, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}

    def resolve(self, key: ResolutionKey, value: Any) -> None:
        with self._lock:
            waiting = self._waiting.pop(key, None)
            if waiting is None:
                self._early[key] = value
        if waiting is not None:
            loop, future = waiting
            loop.call_soon_threadsafe(_settle, future, value)

    async def wait(self, key: ResolutionKey) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            if key in self._early:
                return self._early.pop(key)
            future: asyncio.Future[Any] = loop.create_future()
            self._waiting[key] = (loop, future)
        try:
            return await future
        finally:
            with self._lock:
                if self._waiting.get(key, (None, None))[1] is future:
                    del self._waiting[key]

    def waiting(self) -> list[ResolutionKey]:
        with self._lock:
            return sorted(self._waiting)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class ScriptedExecutor:
    """
    Ends each Job's Pod as ``outcome_for(job)`` says (default: success with no message); every Pod of an
    Indexed Job gets that outcome.

    A ``run_forever`` outcome keeps the Pod Running until a test calls :meth:`resolve` for the Job (for
    an Indexed Job's Pod: for the Job and that Pod's index), from any thread; a resolution that arrives
    before the Pod starts is kept for it.
    """

    def __init__(self, outcome_for: Callable[[Mapping[str, Any]], JobOutcome] | None = None) -> None:
        self.outcome_for = outcome_for or (lambda job: JobOutcome.succeeded())
        self._resolutions = _Resolutions()
        self.started: list[tuple[str, str]] = []  # (namespace, pod name), in the order of starting

    async def start(self, job: Mapping[str, Any], pod: Mapping[str, Any]) -> JobOutcome:
        self.started.append(_key(pod))
        outcome = self.outcome_for(job)
        if outcome.kind == "run_forever":
            index = completion_index(pod)
            outcome = await self._resolutions.wait(_key(job) if index is None else (*_key(job), index))
        if outcome.delay:
            await asyncio.sleep(outcome.delay)
        return outcome

    def resolve(self, namespace: str, job_name: str, outcome: JobOutcome, *, index: int | None = None) -> None:
        """End a Job's running Pod with this outcome (thread-safe); ``index``: the Pod of that completion
        index, for an Indexed Job."""
        self._resolutions.resolve((namespace, job_name) if index is None else (namespace, job_name, index), outcome)

    def running_forever(self) -> list[tuple[str, str] | tuple[str, str, int]]:
        """The Pods that wait for :meth:`resolve`: (namespace, job name), with the completion index last for
        an Indexed Job's Pod."""
        return self._resolutions.waiting()


class ScriptedRollout:
    """
    Makes each Deployment generation ready after ``ready_delay`` seconds, or, with ``hold=True``,
    only when a test calls :meth:`release` (or :meth:`fail`) for it, from any thread.
    """

    def __init__(self, *, ready_delay: float = 0.0, hold: bool = False) -> None:
        self.ready_delay = ready_delay
        self.hold = hold
        self._resolutions = _Resolutions()
        self.torn_down: list[tuple[str, str]] = []

    async def rollout(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        if int((deployment.get("spec") or {}).get("replicas", 1)) == 0:
            return RolloutOutcome(ready=True)  # nothing to bring up; holding applies to pods coming up
        if self.hold:
            outcome: RolloutOutcome = await self._resolutions.wait(_key(deployment))
            return outcome
        await asyncio.sleep(self.ready_delay)
        return RolloutOutcome(ready=True)

    async def teardown(self, deployment: Mapping[str, Any]) -> None:
        self.torn_down.append(_key(deployment))

    def release(self, namespace: str, name: str) -> None:
        """Let a held rollout of this Deployment become ready (thread-safe)."""
        self._resolutions.resolve((namespace, name), RolloutOutcome(ready=True))

    def fail(self, namespace: str, name: str, message: str = "the rollout did not progress in time") -> None:
        """End a held rollout with ProgressDeadlineExceeded (thread-safe)."""
        self._resolutions.resolve((namespace, name), RolloutOutcome(False, "ProgressDeadlineExceeded", message))

    def holding(self) -> list[ResolutionKey]:
        return self._resolutions.waiting()
