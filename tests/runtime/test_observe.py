"""observe_job / observe_deployment: reading Jobs, Pods and Deployments as the planner sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrelease.runtime.observe import observe_deployment, observe_job

JOB = "digits-warmup-0a1b2c3d"
RESULT = {"ok": True, "version": "sha256:abc", "artifactPath": "/srv/models/x", "metrics": {"accuracy": 0.9}}


def job(*conditions: tuple[str, str] | tuple[str, str, str, str]) -> dict[str, Any]:
    """A Job with conditions given as (type, status) or (type, status, reason, message)."""
    listed = []
    for condition in conditions:
        entry = {"type": condition[0], "status": condition[1]}
        if len(condition) == 4:
            entry.update(reason=condition[2], message=condition[3])
        listed.append(entry)
    return {"kind": "Job", "metadata": {"name": JOB}, "status": {"conditions": listed}}


def pod(terminated: dict[str, Any] | None = None, created: str = "2026-11-01T12:00:00Z", job_name: str = JOB,
        running: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = {"terminated": terminated} if terminated is not None else {}
    if running:
        state = {"running": {"startedAt": created}}
    return {
        "kind": "Pod",
        "metadata": {"name": f"{job_name}-{created[-3:-1]}", "creationTimestamp": created,
                     "labels": {"job-name": job_name, "modelrelease.io/release": "digits"}},
        "status": {"containerStatuses": [{"name": "trainer", "state": state}]},
    }


def exited(code: int, message: str | None = None, reason: str = "Error") -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message is not None:
        state["message"] = message
    return state


OK_MESSAGE = json.dumps(RESULT)
BAD_DATA = json.dumps({"ok": False, "error": "data source sklearn:nope is unknown"})


@pytest.mark.parametrize(
    ("conditions", "pods", "phase", "result"),
    [
        pytest.param([], [], "Active", None, id="no-conditions-is-active"),
        pytest.param([("Complete", "False"), ("Failed", "False")], [], "Active", None, id="false-conditions-ignored"),
        pytest.param([("Complete", "True")], [pod(exited(0, OK_MESSAGE, "Completed"))], "Succeeded", RESULT,
                     id="complete"),
        pytest.param([("SuccessCriteriaMet", "True")], [pod(exited(0, OK_MESSAGE, "Completed"))], "Succeeded",
                     RESULT, id="success-criteria-met-before-complete"),
        pytest.param([("Complete", "True")], [], "Succeeded", None, id="complete-without-pod-has-no-result"),
        pytest.param([("Complete", "True")], [pod(exited(0, "Traceback (most recent call last): boom"))],
                     "Succeeded", None, id="unreadable-termination-message"),
        pytest.param([("Complete", "True")], [pod(exited(0, "[1, 2]"))], "Succeeded", None,
                     id="termination-message-not-an-object"),
        pytest.param([("Complete", "True")], [pod(exited(0, ""))], "Succeeded", None, id="empty-termination-message"),
        pytest.param([("Failed", "True", "BackoffLimitExceeded", "")], [], "Failed", None, id="failed"),
        pytest.param([("FailureTarget", "True", "PodFailurePolicy", "")], [], "Failed", None,
                     id="failure-target-before-failed"),
        pytest.param([("Complete", "True"), ("Failed", "True", "x", "")], [], "Succeeded", None,
                     id="success-wins-over-failure"),
    ],
)
def test_job_phase_and_result(conditions: list[Any], pods: list[dict[str, Any]], phase: str,
                              result: dict[str, Any] | None) -> None:
    seen = observe_job(job(*conditions), pods)
    assert seen.name == JOB
    assert seen.phase == phase
    assert seen.result == result


@pytest.mark.parametrize(
    ("condition", "pods", "wanted", "unwanted"),
    [
        pytest.param(("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                     [pod(exited(65, BAD_DATA))],
                     ["BackoffLimitExceeded", "exit code 65", "data source sklearn:nope is unknown",
                      "Job has reached the specified backoff limit"], [], id="exit-code-and-trainer-error"),
        pytest.param(("Failed", "True", "BackoffLimitExceeded", ""), [pod(exited(137, None, "OOMKilled"))],
                     ["BackoffLimitExceeded", "OOMKilled", "memory"], ["exit code"], id="oom-killed"),
        pytest.param(("Failed", "True", "BackoffLimitExceeded", ""), [pod(exited(1, "Segmentation fault (core"))],
                     ["exit code 1"], [], id="unreadable-message-still-gives-exit-code"),
        pytest.param(("Failed", "True", "DeadlineExceeded", "Job was active longer than specified deadline"), [],
                     ["DeadlineExceeded", "Job was active longer than specified deadline"], ["exit code"],
                     id="deadline-without-pod"),
        pytest.param(("FailureTarget", "True", "PodFailurePolicy", "Container trainer failed with exit code 64"),
                     [pod(exited(64))], ["PodFailurePolicy", "exit code 64"], [], id="failure-target"),
        pytest.param(("Failed", "True", "", ""), [pod(running=True)], ["Failed"], ["exit code"],
                     id="no-reason-and-pod-not-terminated"),
    ],
)
def test_failed_job_reason(condition: Any, pods: list[dict[str, Any]], wanted: list[str],
                           unwanted: list[str]) -> None:
    seen = observe_job(job(condition), pods)
    assert seen.phase == "Failed"
    for text in wanted:
        assert text in seen.reason
    for text in unwanted:
        assert text not in seen.reason


def test_failed_job_keeps_the_trainer_result() -> None:
    seen = observe_job(job(("Failed", "True", "BackoffLimitExceeded", "")), [pod(exited(65, BAD_DATA))])
    assert seen.result == json.loads(BAD_DATA)


def test_the_latest_pod_of_the_job_is_read() -> None:
    early = pod(exited(1, json.dumps({"ok": False, "error": "first try"})), created="2026-11-01T12:00:00Z")
    late = pod(exited(0, OK_MESSAGE, "Completed"), created="2026-11-01T12:05:00Z")
    other_job = pod(exited(0, json.dumps({"ok": True, "version": "other"})), created="2026-11-01T13:00:00Z",
                    job_name="digits-grow-ffffffff")
    for pods in ([early, late, other_job], [other_job, late, early]):
        assert observe_job(job(("Complete", "True")), pods).result == RESULT


def test_a_failed_retry_reports_its_own_exit_code() -> None:
    early = pod(exited(137, None, "OOMKilled"), created="2026-11-01T12:00:00Z")
    late = pod(exited(65, BAD_DATA), created="2026-11-01T12:05:00Z")
    reason = observe_job(job(("Failed", "True", "BackoffLimitExceeded", "")), [late, early]).reason
    assert "exit code 65" in reason
    assert "OOMKilled" not in reason


def test_pods_of_other_jobs_are_never_read() -> None:
    stranger = pod(exited(0, OK_MESSAGE, "Completed"), job_name="digits-grow-ffffffff")
    assert observe_job(job(("Complete", "True")), [stranger]).result is None


def deployment(track: str | None = "stable", generation: int | None = 2, replicas: int | None = 4,
               status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"digits-{track}", "annotations": {"modelrelease.io/serving-hash": "h1"}}
    if track is not None:
        meta["labels"] = {"modelrelease.io/release": "digits", "modelrelease.io/track": track}
    if generation is not None:
        meta["generation"] = generation
    spec: dict[str, Any] = {"template": {"metadata": {"annotations": {"modelrelease.io/version-id": "sha256:v1"}}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"kind": "Deployment", "metadata": meta, "spec": spec, "status": status or {}}


@pytest.mark.parametrize(
    ("status", "generation", "ready"),
    [
        pytest.param({"observedGeneration": 2, "updatedReplicas": 4, "readyReplicas": 4}, 2, 4, id="caught-up"),
        pytest.param({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 4}, 2, 2,
                     id="old-pods-ready-do-not-count"),
        pytest.param({"observedGeneration": 2, "updatedReplicas": 4, "readyReplicas": 1}, 2, 1,
                     id="updated-not-ready-do-not-count"),
        pytest.param({"observedGeneration": 1, "updatedReplicas": 4, "readyReplicas": 4}, 2, 0,
                     id="observed-generation-behind"),
        pytest.param({"observedGeneration": 3, "updatedReplicas": 3, "readyReplicas": 3}, 2, 3,
                     id="observed-generation-ahead"),
        pytest.param({}, 1, 0, id="no-status-yet"),
        pytest.param({"updatedReplicas": 4, "readyReplicas": 4}, 1, 0, id="never-observed"),
        pytest.param({"observedGeneration": 1}, 1, 0, id="no-replica-counts"),
    ],
)
def test_deployment_ready(status: dict[str, Any], generation: int, ready: int) -> None:
    seen = observe_deployment(deployment(status=status, generation=generation))
    assert seen is not None
    assert seen.ready == ready


def test_deployment_fields() -> None:
    seen = observe_deployment(deployment("canary", status={"observedGeneration": 2}))
    assert seen is not None
    assert (seen.track, seen.version, seen.replicas, seen.serving_hash) == ("canary", "sha256:v1", 4, "h1")


def test_deployment_without_replicas_defaults_to_one() -> None:
    seen = observe_deployment(deployment(replicas=None))
    assert seen is not None
    assert seen.replicas == 1


@pytest.mark.parametrize("track", ["shadow", "", None], ids=["unknown", "empty", "unlabelled"])
def test_deployment_of_unknown_track_is_ignored(track: str | None) -> None:
    assert observe_deployment(deployment(track)) is None
