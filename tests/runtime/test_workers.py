"""A multi-worker stage through a reconcile pass: the Job, its headless Service (also after a crash in between),
the chief's result, the failing worker's reason, and the lineage the version records."""

from __future__ import annotations

import json
from typing import Any

from modelrelease.runtime.observe import image_digest, observe_job
from tests.core.world import base_spec, result_for
from tests.runtime.test_reconcile import NS, Release

DIGEST = "sha256:" + "c" * 64


def _spec(workers: int = 2) -> dict[str, Any]:
    raw = base_spec()
    raw["training"] = {"workers": workers, "image": "ghcr.io/modelrelease/trainer:0.1.0"}
    return raw


def _pod(job: dict[str, Any], index: int, exit_code: int, message: str, created: str,
         image_id: str = "") -> dict[str, Any]:
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-{index}-{created[-3:-1]}", "namespace": NS, "creationTimestamp": created,
                     "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name,
                                "batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"containerStatuses": [{"name": "trainer", "image": "ghcr.io/modelrelease/trainer:0.1.0",
                                          "imageID": image_id, "state": {"terminated": {
                                              "exitCode": exit_code, "message": message}}}]},
    }


def test_the_job_comes_with_a_headless_service_owned_by_it() -> None:
    release = Release(_spec(workers=3))
    release.reconcile()
    name = release.active_job()
    job = release.cluster.get("Job", NS, name)
    assert job is not None and job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    service = release.cluster.get("Service", NS, name)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    policy = release.cluster.get("NetworkPolicy", NS, name)
    assert policy is not None and policy["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert [(c.verb, c.kind) for c in release.cluster.writes()] == [
        ("create", "Job"), ("create", "NetworkPolicy"), ("create", "Service"), ("patch_release_status", "ModelRelease")]
    mark = release.cluster.mark()
    release.reconcile()  # settled: the Service is there, nothing is asked again
    assert [c for c in release.cluster.since(mark) if c.is_write] == []


def test_a_service_lost_to_a_crash_after_the_job_is_recreated() -> None:
    release = Release(_spec())
    release.reconcile()
    name = release.active_job()
    release.cluster.objects.pop(("Service", NS, name))  # the operator died after the Job and its policy
    release.cluster.objects.pop(("NetworkPolicy", NS, name))  # (or before the policy)
    release.reconcile()
    service = release.cluster.get("Service", NS, name)
    assert service is not None and release.cluster.get("NetworkPolicy", NS, name) is not None
    job = release.cluster.get("Job", NS, name)
    assert job is not None and service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


def test_a_finished_job_gets_no_service_back() -> None:
    release = Release(_spec())
    release.reconcile()
    name = release.finish_job(result_for("warmup", 0.95, 0))
    release.cluster.objects.pop(("Service", NS, name))
    release.reconcile()
    assert release.cluster.get("Service", NS, name) is None


def test_the_version_records_its_lineage_from_the_chief_and_the_spec() -> None:
    release = Release(_spec())
    release.reconcile()
    name = release.active_job()
    job = release.cluster.get("Job", NS, name)
    assert job is not None
    chief = {**result_for("warmup", 0.95, 0), "dataHash": "sha256:" + "d" * 64, "resumedFromEpoch": 3,
             "workers": 2, "epochsRun": 2}
    other = {**result_for("warmup", 0.5, 9)}  # index 1 would report the same; a different one must not be read
    release.cluster.set_status("Job", NS, name, {"succeeded": 2, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]})
    release.cluster.put(_pod(job, 0, 0, json.dumps(chief), "2026-11-01T12:00:01Z",
                             f"ghcr.io/modelrelease/trainer@{DIGEST}"))
    release.cluster.put(_pod(job, 1, 0, json.dumps(other), "2026-11-01T12:00:09Z"))
    release.reconcile()
    version = release.status["stable"]
    assert version["id"] == chief["version"]
    assert version["dataHash"] == "sha256:" + "d" * 64 and version["resumedFromEpoch"] == 3
    assert version["image"] == f"ghcr.io/modelrelease/trainer@{DIGEST}"
    assert version["hyperparameters"] == {
        "epochs": 5, "batchSize": 32, "optimizer": "adam", "learningRate": 0.001, "weightDecay": 0.0, "seed": 0,
        "evalFraction": 0.2, "initFrom": "previous", "mixedPrecision": "auto", "workers": 2}


def test_a_failed_worker_explains_the_failure_of_the_stage() -> None:
    release = Release(_spec())
    release.reconcile()
    job = release.cluster.get("Job", NS, release.active_job())
    assert job is not None
    failure = {"schemaVersion": 1, "ok": False, "stage": "warmup", "error": "--data: no file at /data/x.csv",
               "exitCode": 65}
    job = {**job, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    pods = [_pod(job, 0, 75, json.dumps({**failure, "error": "a peer is gone", "exitCode": 75}),
                 "2026-11-01T12:00:05Z"),
            _pod(job, 1, 65, json.dumps(failure), "2026-11-01T12:00:04Z")]
    seen = observe_job(job, pods)
    assert seen.phase == "Failed" and "exit code 65" in seen.reason and "no file at /data/x.csv" in seen.reason


def test_image_digests_are_read_from_the_runtimes_image_ids() -> None:
    def pod(image: str, image_id: str) -> dict[str, Any]:
        return {"status": {"containerStatuses": [{"image": image, "imageID": image_id}]}}

    assert image_digest(pod("ghcr.io/m/t:0.1.0", f"docker-pullable://ghcr.io/m/t@{DIGEST}")) == f"ghcr.io/m/t@{DIGEST}"
    assert image_digest(pod("localhost:5000/t:1", f"localhost:5000/t@{DIGEST}")) == f"localhost:5000/t@{DIGEST}"
    assert image_digest(pod("t:1", DIGEST)) is None  # an image config id, not a repository digest
    assert image_digest(pod("t:1", "")) is None and image_digest(None) is None
