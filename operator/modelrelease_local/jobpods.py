"""
The Pods of an emulated Job, from creation to their end, for both completion modes (:mod:`.jobs`,
:mod:`.indexed`).

A Pod is created from the Job's template with the controller's labels and ownerReference, runs on
the one embedded node (Running and Ready at once), and ends as the executor reports: Succeeded, or
Failed with the container's exit code, reason and termination message, and a ``DisruptionTarget``
condition for a disruption. A Pod that a previous control plane ran is marked lost as a dead node's
Pods are.

An Indexed Job's Pod gets what the Kubernetes 1.32 controller gives it: the label and annotation
``batch.kubernetes.io/job-completion-index``, ``spec.hostname: <job>-<index>`` (the template's
``subdomain`` kept, so that a headless Service of that name gives it a DNS name), the name
``<job>-<index>-<suffix>``, and in every container, unless it defines one, the variable
``JOB_COMPLETION_INDEX`` from the index label through the downward API.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from modelrelease_local import timestamps
from modelrelease_local.indexes import COMPLETION_INDEX
from modelrelease_local.outcomes import DISRUPTION_MESSAGES, JobExecutor, JobOutcome
from modelrelease_local.resources import ApiResource
from modelrelease_local.statuses import current_status, object_key, write_status
from modelrelease_local.store import ObjectStore

__all__ = ["JOB_COUNTERS", "create_pod", "execute", "finished_at", "mark_lost", "mark_running", "owned_by", "phase",
           "seconds_since", "terminate_pod"]

logger = logging.getLogger(__name__)
Object = dict[str, Any]

JOB_COUNTERS = ("active", "failed", "succeeded")  # omitted from a Job's status at zero
LOST_REASON = "DeletionByTaintManager"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
# The API server appends 5 random characters to a generateName, of at most 63 - 5 characters.
_MAX_GENERATED_NAME = 58


def owned_by(pod: Mapping[str, Any], uid: str) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get("batch.kubernetes.io/controller-uid") == uid


def phase(pod: Mapping[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def seconds_since(moment: str | None) -> float:
    if not moment:
        return 0.0
    then = datetime.datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def finished_at(pod: Mapping[str, Any]) -> str:
    """When a finished Pod ended, as the controller's back-off reads it: its containers' last finish,
    else when it stopped being Ready, else its creation."""
    status = pod.get("status") or {}
    finishes = [((c.get("state") or {}).get("terminated") or {}).get("finishedAt")
                for c in status.get("containerStatuses") or []]
    if finishes and all(finishes):
        return max(str(moment) for moment in finishes)
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "False" and ready.get("lastTransitionTime"):
        return str(ready["lastTransitionTime"])
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _generate_name(job_name: str, index: int | None) -> str:
    if index is None:
        return f"{job_name}-"
    tail = f"-{index}-"
    return f"{job_name[:_MAX_GENERATED_NAME - len(tail)]}{tail}"


def _with_completion_index(container: Mapping[str, Any]) -> Object:
    env = list(container.get("env") or [])
    if not any(variable.get("name") == COMPLETION_INDEX_ENV for variable in env):
        env.append({"name": COMPLETION_INDEX_ENV,
                    "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{COMPLETION_INDEX}']"}}})
    return {**container, "env": env}


def create_pod(store: ObjectStore, pods: ApiResource, job: Object, index: int | None = None) -> Object:
    """The Job's next Pod (of this completion index, for an Indexed Job), created in the API."""
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), "job-name": name, "batch.kubernetes.io/job-name": name,
              "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid}
    annotations = dict(template_meta.get("annotations") or {})
    pod_spec = {**(template.get("spec") or {}), "nodeName": "embedded-node"}
    if index is not None:
        labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
        pod_spec["hostname"] = f"{name}-{index}"
        for kind in ("initContainers", "containers"):
            if pod_spec.get(kind):
                pod_spec[kind] = [_with_completion_index(container) for container in pod_spec[kind]]
    metadata: Object = {
        "generateName": _generate_name(name, index), "labels": labels,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                             "controller": True, "blockOwnerDeletion": True}],
    }
    if annotations:
        metadata["annotations"] = annotations
    return store.create(pods, job["metadata"]["namespace"], {"metadata": metadata, "spec": pod_spec})


def mark_running(store: ObjectStore, pods: ApiResource, pod: Object) -> None:
    """The Pod is scheduled on the embedded node, its containers started and ready."""
    now = timestamps.now()
    containers = (pod.get("spec") or {}).get("containers") or []
    write_status(store, pods, pod, {
        "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "qosClass": "BestEffort",
        "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now, "lastProbeTime": None}
                       for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                    "PodScheduled")],
        "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True, "started": True,
             "restartCount": 0, "state": {"running": {"startedAt": now}}} for c in containers],
    })


async def execute(executor: JobExecutor, job: Object, pod: Object) -> JobOutcome:
    """Run the Pod through the executor to its end; an executor that breaks fails the Pod (exit 128)."""
    try:
        outcome = await executor.start(job, pod)
        while outcome.kind == "run_forever":  # an executor may say so: it ends only by cancellation
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("The job executor failed for %s/%s", *object_key(job))
        outcome = JobOutcome.failed(exit_code=128, message=f"the executor failed: {exc!r}")
    return outcome


def _pod_failed(status: Object, now: str, *, disruption: str | None) -> None:
    status["phase"] = "Failed"
    for condition in status.get("conditions") or []:
        if condition["type"] in ("Ready", "ContainersReady"):
            condition.update(status="False", lastTransitionTime=now, reason="PodFailed")
    if disruption is not None:
        status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "DisruptionTarget"] + [
            {"type": "DisruptionTarget", "status": "True", "reason": disruption,
             "message": DISRUPTION_MESSAGES[disruption], "lastTransitionTime": now, "lastProbeTime": None}]


def mark_lost(store: ObjectStore, pods: ApiResource, pod: Object) -> None:
    """A Pod run by a previous control plane: Failed, as a lost node's Pod is (DisruptionTarget)."""
    status = current_status(store, pods, pod)
    if status is None:
        return
    _pod_failed(status, timestamps.now(), disruption=LOST_REASON)
    for container in status.get("containerStatuses") or []:
        container.update(ready=False, started=False)  # their last known state stays: nobody saw them end
    write_status(store, pods, pod, status)
    pod.setdefault("status", {}).update(status)


def terminate_pod(store: ObjectStore, pods: ApiResource, pod: Object, outcome: JobOutcome) -> None:
    """Write how the Pod ended: its phase, conditions and the containers' terminated states."""
    status = current_status(store, pods, pod)
    if status is None:
        return
    now = timestamps.now()
    if outcome.kind == "succeeded":
        status["phase"] = "Succeeded"
        for condition in status.get("conditions") or []:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", lastTransitionTime=now, reason="PodCompleted")
    else:
        _pod_failed(status, now, disruption=outcome.disruption)
    if outcome.kind == "deadline_exceeded":
        status.update(reason="DeadlineExceeded", message="Job was active longer than specified deadline")
    for index, container in enumerate(status.get("containerStatuses") or []):
        started = (container.get("state") or {}).get("running", {}).get("startedAt", now)
        terminated = {"exitCode": outcome.exit_code if index == 0 else 0,
                      "reason": outcome.container_reason if index == 0 else "Completed",
                      "startedAt": started, "finishedAt": now}
        if index == 0 and outcome.message is not None:
            terminated["message"] = outcome.message
        container.update(ready=False, started=False, state={"terminated": terminated})
    write_status(store, pods, pod, status)
    pod["status"] = status
