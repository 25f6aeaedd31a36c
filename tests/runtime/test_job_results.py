"""A finished Job whose pod's final state has not reached the operator's cache yet: wait for it a while."""

from __future__ import annotations

import json
from datetime import timedelta

from modelrelease.runtime.observe import observe_job
from tests.core.world import base_spec, result_for
from tests.runtime.test_reconcile import NS, T0, Release

DONE = T0 + timedelta(seconds=10)


def complete(release: Release, name: str) -> None:
    release.cluster.set_status("Job", NS, name, {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": DONE.strftime("%Y-%m-%dT%H:%M:%SZ")}]})


def pod_with_result(release: Release, name: str) -> None:
    job = release.cluster.get("Job", NS, name)
    assert job is not None
    release.cluster.put({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "namespace": NS, "creationTimestamp": "2026-11-01T12:00:01Z",
                     "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}},
        "status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": {
            "exitCode": 0, "message": json.dumps(result_for("warmup"))}}}]}})


def test_the_result_arriving_after_the_job_is_waited_for() -> None:
    release = Release(base_spec())
    release.reconcile()
    name = release.active_job()
    complete(release, name)
    release.reconcile(DONE + timedelta(seconds=5))
    assert release.status["phase"] == "Training" and "failure" not in release.status
    pod_with_result(release, name)
    release.reconcile(DONE + timedelta(seconds=6))
    assert release.status["stable"]["stage"] == "warmup"


def test_a_result_that_never_comes_fails_the_stage_after_the_grace() -> None:
    release = Release(base_spec())
    release.reconcile()
    complete(release, release.active_job())
    release.reconcile(DONE + timedelta(seconds=29))
    assert release.status["phase"] == "Training"
    release.reconcile(DONE + timedelta(seconds=31))
    assert release.status["failure"]["reason"] == "TrainingFailed"
    assert "left no valid result" in release.status["failure"]["message"]


def test_observe_marks_a_finished_job_whose_pod_is_not_seen() -> None:
    job = {"metadata": {"name": "j"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "lastTransitionTime": "2026-11-01T12:00:10Z"}]}}
    seen = observe_job(job, [])
    assert seen.phase == "Failed" and seen.pod_pending and seen.finished_at == DONE
    pod = {"metadata": {"name": "p", "labels": {"job-name": "j"}}, "status": {"containerStatuses": [
        {"state": {"terminated": {"exitCode": 65}}}]}}
    assert not observe_job(job, [pod]).pod_pending and "exit code 65" in observe_job(job, [pod]).reason
