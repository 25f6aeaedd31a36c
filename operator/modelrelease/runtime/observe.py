"""Read what exists in the cluster for one release and turn it into the planner's Observations."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from modelrelease.api.labels import (
    ANNOTATION_SERVING_HASH,
    ANNOTATION_VERSION_ID,
    LABEL_COMPLETION_INDEX,
    LABEL_TRACK,
)
from modelrelease.core.model import DeploymentObservation, JobObservation
from modelrelease.core.naming import worker_service_name
from modelrelease.core.timestamps import parse_timestamp
from modelrelease.manifests.job import EXIT_BAD_CONFIG, EXIT_BAD_DATA
from modelrelease.manifests.workers import workers_of


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (container.get("state") or {}).get("terminated")
        if state:
            return state
    return None


def _result_of(message: str | None) -> dict[str, Any] | None:
    if not message:
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _latest(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


def _chief_pod(job: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest pod of the Job's index 0 (the chief of a multi-worker Job, the only worker otherwise)."""
    name = job["metadata"]["name"]
    own = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name]
    return _latest([p for p in own if (p["metadata"].get("labels") or {}).get(LABEL_COMPLETION_INDEX, "0") == "0"])


def _failed_pod(job: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The worker whose failure tells why the Job failed: one that exited with bad configuration or data (its
    peers then fail only because it is gone), else the latest that exited non-zero."""
    name = job["metadata"]["name"]
    failed = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name
              and ((_terminated(p) or {}).get("exitCode") or 0) != 0]
    fatal = [p for p in failed if (_terminated(p) or {}).get("exitCode") in (EXIT_BAD_CONFIG, EXIT_BAD_DATA)]
    return _latest(fatal or failed)


def image_digest(pod: dict[str, Any] | None) -> str | None:
    """name@sha256:... of the image the trainer container ran, when the node reported a repository digest."""
    for container in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        image, image_id = str(container.get("image") or ""), str(container.get("imageID") or "")
        _, at, digest = image_id.rpartition("@")
        if at and digest.startswith("sha256:") and len(digest) == 71:
            name = image.split("@", 1)[0]
            repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            return f"{repository}@{digest}"
    return None


def _finished_at(condition: dict[str, Any]) -> datetime | None:
    moment = condition.get("lastTransitionTime")
    return parse_timestamp(moment) if isinstance(moment, str) else None


def observe_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobObservation:
    name = job["metadata"]["name"]
    pod = _chief_pod(job, pods)
    terminated = _terminated(pod) if pod else None
    result = _result_of(terminated.get("message")) if terminated else None
    succeeded = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    if succeeded:
        return JobObservation(name, "Succeeded", result=result, finished_at=_finished_at(succeeded),
                              pod_pending=terminated is None, image_digest=image_digest(pod))
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed is None:
        return JobObservation(name, "Active")
    culprit = _failed_pod(job, pods)
    if culprit is not None and culprit is not pod:
        pod, terminated = culprit, _terminated(culprit)
        result = _result_of(terminated.get("message")) if terminated else None
    parts = [failed.get("reason") or "Failed"]
    if terminated:
        if terminated.get("reason") == "OOMKilled":
            parts.append("OOMKilled: the trainer ran out of memory; raise its memory limit or lower batchSize")
        elif terminated.get("exitCode") is not None:
            parts.append(f"exit code {terminated['exitCode']}")
        if result and result.get("error"):
            parts.append(str(result["error"]))
    if failed.get("message"):
        parts.append(failed["message"])
    return JobObservation(name, "Failed", result=result, reason=": ".join(parts), finished_at=_finished_at(failed),
                          pod_pending=terminated is None)


def observe_deployment(deployment: dict[str, Any]) -> DeploymentObservation | None:
    meta = deployment["metadata"]
    track = (meta.get("labels") or {}).get(LABEL_TRACK)
    if track not in ("stable", "canary"):
        return None
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    caught_up = status.get("observedGeneration", 0) >= meta.get("generation", 1)
    ready = min(status.get("updatedReplicas", 0), status.get("readyReplicas", 0)) if caught_up else 0
    return DeploymentObservation(
        track=track,
        version=(template_meta.get("annotations") or {}).get(ANNOTATION_VERSION_ID),
        replicas=int(spec.get("replicas", 1)),
        ready=ready,
        serving_hash=(meta.get("annotations") or {}).get(ANNOTATION_SERVING_HASH),
    )


def unserved_worker_jobs(jobs: list[dict[str, Any]], services: set[str]) -> tuple[dict[str, Any], ...]:
    """The running multi-worker Jobs whose headless Service is not among ``services``."""
    return tuple(job for job in jobs
                 if workers_of(job) > 1 and (job.get("metadata") or {}).get("uid")
                 and not (_condition(job, "Complete") or _condition(job, "Failed"))
                 and worker_service_name(job["metadata"]["name"]) not in services)
