"""
The emulated Job controller against what Kubernetes 1.32 documents for batch/v1 Jobs: the pod
failure policy, the back-off limit and its exponential delay, the active deadline, the TTL after
finishing, and Pods lost with a previous control plane.
"""
import functools
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator, JobController
from modelrelease_local.outcomes import JobOutcome, ScriptedExecutor
from tests.local.conftest import job_body
from tests.waiting import wait_for

# The operator's own rules (manifests/job.py): bad configuration or data fail the Job, disruptions are ignored.
OPERATOR_POLICY = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In", "values": [64, 65]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
]}


def _job(name: str, *, backoff_limit: int = 3, policy: dict[str, Any] | None = OPERATOR_POLICY,
         **spec: Any) -> dict[str, Any]:
    body = job_body(name, backoff_limit=backoff_limit)
    if policy is not None:
        body["spec"]["podFailurePolicy"] = policy
    body["spec"].update(spec)
    return body


def _in_turn(*outcomes: JobOutcome) -> ScriptedExecutor:
    """An executor that ends the Pods of every Job with these outcomes, one per Pod, the last one repeated."""
    started: dict[str, int] = {}

    def next_outcome(job: Any) -> JobOutcome:
        index = started[job["metadata"]["name"]] = started.get(job["metadata"]["name"], -1) + 1
        return outcomes[min(index, len(outcomes) - 1)]
    return ScriptedExecutor(next_outcome)


class Cluster:
    def __init__(self, executor: ScriptedExecutor, *, backoff_scale: float = 0.0) -> None:
        self.emulator = ControllerEmulator(executor, job_backoff_scale=backoff_scale)
        self.server = EmbeddedApiServer(controllers=[self.emulator]).start()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.server.call(self.server.store.create, self.server.resource("batch/v1", "jobs"), "ml", body)

    def job(self, name: str) -> dict[str, Any] | None:
        return self.server.get_object("batch/v1", "jobs", "ml", name)

    def finished(self, name: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(name) or {}
            types = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c["status"] == "True"}
            return job if types & {"Complete", "Failed"} else None
        return wait_for(done, message=f"the job {name} to finish")

    def pods(self, job: str) -> list[dict[str, Any]]:
        pods = [pod for pod in self.server.list_objects("v1", "pods", "ml")
                if pod["metadata"]["labels"].get("job-name") == job]
        return sorted(pods, key=lambda pod: int(pod["metadata"]["resourceVersion"]))


@pytest.fixture
def cluster_for() -> Iterator[Any]:
    started: list[Cluster] = []

    def make(executor: ScriptedExecutor, **options: Any) -> Cluster:
        started.append(Cluster(executor, **options))
        return started[-1]
    yield make
    for cluster in started:
        cluster.server.stop()


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in job["status"]["conditions"] if c["type"] == kind)


def test_fail_job_rule_ends_the_job_at_the_first_matching_exit_code(cluster_for: Any) -> None:
    """https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy: FailJob marks the Job
    failed at once, whatever backoffLimit allows, with reason PodFailurePolicy and the controller's message."""
    cluster = cluster_for(_in_turn(JobOutcome.failed(exit_code=65)))
    cluster.create(_job("bad-data", backoff_limit=6))
    job = cluster.finished("bad-data")
    [pod] = cluster.pods("bad-data")
    failed = _condition(job, "Failed")
    assert (failed["reason"], failed["message"]) == (
        "PodFailurePolicy",
        f"Container train for pod ml/{pod['metadata']['name']} failed with exit code 65 matching FailJob rule"
        f" at index 0")
    assert _condition(job, "FailureTarget")["reason"] == "PodFailurePolicy"
    assert job["status"]["failed"] == 1 and "active" not in job["status"]


def test_ignore_rule_replaces_a_disrupted_pod_without_counting_it(cluster_for: Any) -> None:
    """Pod failure policy, action Ignore: "the counter towards the .spec.backoffLimit is not incremented and a
    replacement Pod is created"; an evicted Pod carries the DisruptionTarget condition
    (https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions)."""
    cluster = cluster_for(_in_turn(JobOutcome.disrupted("EvictionByEvictionAPI"),
                                   JobOutcome.disrupted("PreemptionByScheduler"), JobOutcome.succeeded("done")))
    cluster.create(_job("evicted", backoff_limit=0))
    job = cluster.finished("evicted")
    assert _condition(job, "Complete")["status"] == "True"
    assert job["status"]["succeeded"] == 1 and "failed" not in job["status"]
    first, second, third = cluster.pods("evicted")
    assert [pod["status"]["phase"] for pod in (first, second, third)] == ["Failed", "Failed", "Succeeded"]
    disruption = _condition(first, "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "EvictionByEvictionAPI")
    assert _condition(second, "DisruptionTarget")["reason"] == "PreemptionByScheduler"


def test_count_rules_and_unmatched_failures_count_toward_the_backoff_limit(cluster_for: Any) -> None:
    """Pod failure policy: a Count rule, like a failure no rule matches, counts toward backoffLimit; the Job fails
    with BackoffLimitExceeded once the failures exceed it
    (https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-backoff-failure-policy)."""
    policy = {"rules": [
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3]}},
    ]}
    cluster = cluster_for(_in_turn(JobOutcome.failed(exit_code=3), JobOutcome.failed(exit_code=1)))
    cluster.create(_job("counted", backoff_limit=1, policy=policy))
    job = cluster.finished("counted")
    assert _condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 2 and len(cluster.pods("counted")) == 2


def test_replacement_pods_wait_the_exponential_back_off(cluster_for: Any) -> None:
    """Pod backoff failure policy: "Failed Pods associated with the Job are recreated by the Job controller with
    an exponential back-off delay (10s, 20s, 40s ...) capped at six minutes"."""
    executor = _in_turn(JobOutcome.failed(exit_code=1))
    cluster = cluster_for(executor, backoff_scale=0.001)
    cluster.create(_job("flaky", backoff_limit=3, policy=None))
    job = cluster.finished("flaky")
    assert _condition(job, "Failed")["reason"] == "BackoffLimitExceeded" and job["status"]["failed"] == 4
    assert cluster.emulator.jobs.backoff_delays[("ml", "flaky")] == [10.0, 20.0, 40.0]
    assert len(executor.started) == 4


def test_the_back_off_is_kubernetes_own_unless_shortened(cluster_for: Any) -> None:
    """The default JobController waits the documented 10 s before the first replacement Pod: right after the
    delay is chosen, the failed Pod is still the only one."""
    assert JobController().backoff_scale == 1.0
    cluster = cluster_for(_in_turn(JobOutcome.failed(exit_code=1)), backoff_scale=1.0)
    cluster.create(_job("patient", policy=None))
    wait_for(lambda: cluster.emulator.jobs.backoff_delays.get(("ml", "patient")), message="the back-off to start")
    assert cluster.emulator.jobs.backoff_delays[("ml", "patient")] == [10.0]
    assert [pod["status"]["phase"] for pod in cluster.pods("patient")] == ["Failed"]
    assert (cluster.job("patient") or {})["status"]["failed"] == 1


def test_active_deadline_terminates_the_running_pod(cluster_for: Any) -> None:
    """https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup: "Once a Job
    reaches activeDeadlineSeconds, all of its running Pods are terminated and the Job status will become
    type: Failed with reason: DeadlineExceeded"."""
    cluster = cluster_for(_in_turn(JobOutcome.run_forever()))
    cluster.create(_job("slow", activeDeadlineSeconds=1))
    job = cluster.finished("slow")
    failed = _condition(job, "Failed")
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "Job was active longer than specified"
                                                                         " deadline")
    [pod] = cluster.pods("slow")
    assert pod["status"]["phase"] == "Failed"
    assert "terminated" in pod["status"]["containerStatuses"][0]["state"]
    assert job["status"]["failed"] == 1 and "active" not in job["status"]


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster_for: Any, ttl: int) -> None:
    """https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/: the Job is deleted
    ttlSecondsAfterFinished after it finished (0: at once), its Pods with it (cascading deletion)."""
    cluster = cluster_for(_in_turn(JobOutcome.succeeded()))
    cluster.create(_job("short-lived", ttlSecondsAfterFinished=ttl))
    wait_for(lambda: cluster.job("short-lived") is None, message="the finished job to be deleted")
    wait_for(lambda: not cluster.pods("short-lived"), message="its pods to be collected")


def test_a_job_without_ttl_stays(cluster_for: Any) -> None:
    """Without ttlSecondsAfterFinished a finished Job stays, and its Pods with it."""
    cluster = cluster_for(_in_turn(JobOutcome.succeeded()))
    cluster.create(_job("kept"))
    cluster.finished("kept")
    cluster.create(_job("marker", ttlSecondsAfterFinished=0))
    wait_for(lambda: cluster.job("marker") is None, message="the marker job to expire")
    assert cluster.job("kept") is not None and len(cluster.pods("kept")) == 1


def _orphaned_running_pod(server: EmbeddedApiServer, job: dict[str, Any]) -> dict[str, Any]:
    """A Pod as a previous control plane left it: Running, owned by the Job, run by nobody now."""
    pods = server.resource("v1", "pods")
    uid = job["metadata"]["uid"]
    pod = server.call(server.store.create, pods, "ml", {"metadata": {
        "name": f"{job['metadata']['name']}-old", "labels": {"job-name": job["metadata"]["name"],
                                                             "batch.kubernetes.io/controller-uid": uid},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": uid,
                             "controller": True}]},
        "spec": {"containers": [{"name": "train", "image": "trainer:1"}]}})
    status = {"phase": "Running", "containerStatuses": [
        {"name": "train", "ready": True, "started": True, "restartCount": 0, "image": "trainer:1", "imageID": "",
         "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}
    server.call(functools.partial(server.store.replace, subresource="status"), pods, "ml", pod["metadata"]["name"],
                {"status": status})
    jobs = server.resource("batch/v1", "jobs")
    server.call(functools.partial(server.store.replace, subresource="status"), jobs, "ml", job["metadata"]["name"],
                {"status": {"startTime": "2025-01-01T00:00:00Z", "active": 1, "ready": 1}})
    return pod


@pytest.mark.parametrize(("policy", "counted"), [(OPERATOR_POLICY, None), (None, 1)])
def test_pods_of_a_previous_control_plane_are_lost_like_a_dead_nodes(policy: Any, counted: int | None) -> None:
    """A Pod whose node is gone gets DisruptionTarget (reason DeletionByTaintManager) and Failed
    (https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions); the Job's
    podFailurePolicy decides: the operator's Ignores it (not counted), without a policy it counts."""
    with EmbeddedApiServer() as server:
        job = server.call(server.store.create, server.resource("batch/v1", "jobs"), "ml",
                          _job("resumed", policy=policy))
        old = _orphaned_running_pod(server, job)
        server.attach(ControllerEmulator(_in_turn(JobOutcome.succeeded("again")), job_backoff_scale=0.0))

        def completed() -> dict[str, Any] | None:
            found = server.get_object("batch/v1", "jobs", "ml", "resumed") or {}
            return found if (found.get("status") or {}).get("succeeded") else None
        finished = wait_for(completed, message="the resumed job to complete")
        assert finished["status"].get("failed") == counted
        lost = server.get_object("v1", "pods", "ml", old["metadata"]["name"]) or {}
        assert lost["status"]["phase"] == "Failed"
        disruption = _condition(lost, "DisruptionTarget")
        assert (disruption["status"], disruption["reason"]) == ("True", "DeletionByTaintManager")
        assert len([p for p in server.list_objects("v1", "pods", "ml")]) == 2


def test_a_fresh_store_has_nothing_to_adopt(batch: kubernetes.client.BatchV1Api,
                                            outcomes: dict[str, JobOutcome]) -> None:
    """Without a previous control plane, a Job's first Pod is simply its first: nothing is marked lost."""
    batch.create_namespaced_job("ml", _job("first"))
    wait_for(lambda: (batch.read_namespaced_job("first", "ml").status.succeeded or 0) == 1, message="the job")
    assert batch.read_namespaced_job("first", "ml").status.failed is None


def test_disruptions_name_a_reason_kubernetes_writes() -> None:
    """DisruptionTarget reasons are a fixed vocabulary (PreemptionByScheduler, DeletionByTaintManager,
    EvictionByEvictionAPI, DeletionByPodGC, TerminationByKubelet)."""
    with pytest.raises(ValueError, match="DeletionByTaintManager"):
        JobOutcome.disrupted("NodeFellOver")
