"""reconcile_once against an in-memory cluster: what one pass writes, and what it leaves alone."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrelease.adapters.kubernetes import Conflict
from modelrelease.adapters.prometheus import QueryResult
from modelrelease.api import ModelReleaseSpec
from modelrelease.runtime.reconcile import PassResult, reconcile_once
from tests.core.world import base_spec, result_for
from tests.runtime.fake_cluster import FakeCluster

NS, NAME = "ml", "digits"
T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
MANAGED = {"app.kubernetes.io/managed-by": "model-release-operator", "modelrelease.io/release": NAME}
Answer = Callable[[str], QueryResult]


def healthy(promql: str) -> QueryResult:
    """Canary and stable look alike, with plenty of traffic."""
    if promql.startswith("requests"):
        return QueryResult.of(500)
    if promql.startswith("error_rate"):
        return QueryResult.of(0.01)
    return QueryResult.of(0.20)


@dataclass
class FakeMetrics:
    answer: Answer = healthy
    queries: list[str] = field(default_factory=list)
    closed: bool = False

    def query(self, promql: str) -> QueryResult:
        assert not self.closed, "queried after close"
        self.queries.append(promql)
        return self.answer(promql)

    def close(self) -> None:
        self.closed = True


@dataclass
class Providers:
    """The providers(spec, namespace) factory; every call hands out a fresh FakeMetrics."""

    answer: Answer = healthy
    made: list[FakeMetrics] = field(default_factory=list)
    asked: list[tuple[ModelReleaseSpec, str]] = field(default_factory=list)

    def __call__(self, spec: ModelReleaseSpec, namespace: str) -> FakeMetrics:
        self.asked.append((spec, namespace))
        self.made.append(FakeMetrics(self.answer))
        return self.made[-1]

    @property
    def queries(self) -> list[str]:
        return [q for m in self.made for q in m.queries]


def analysed_spec(**overrides: Any) -> dict[str, Any]:
    """The planner tests' three-stage spec, with checks whose queries are easy to tell apart."""
    spec = base_spec(**overrides)
    spec["analysis"] = {
        "prometheus": {"url": "http://prometheus:9090"},
        "interval": "30s", "failureLimit": 0, "inconclusiveLimit": 2, "minSampleCount": 10,
        "checks": [
            {"name": "errors", "query": 'error_rate{track="{{ track }}",version="{{ version }}"}', "max": 0.05,
             "sampleQuery": 'requests{track="{{ track }}",version="{{ version }}"}'},
            {"name": "latency", "query": 'latency_p99{track="{{ track }}",version="{{ version }}"}',
             "maxRatio": 1.5},
        ],
    }
    return spec


class Release:
    """One ModelRelease in the fake cluster, the events it emitted, and a way to play the Job controller."""

    def __init__(self, spec: dict[str, Any], providers: Providers | None = None, **metadata: Any):
        self.cluster = FakeCluster()
        self.providers = providers or Providers()
        self.events: list[tuple[str, str, str]] = []
        self.cluster.add_release(NAME, copy.deepcopy(spec), namespace=NS, **metadata)
        self.pods = 0

    def reconcile(self, now: datetime = T0) -> PassResult:
        return reconcile_once(self.cluster, self.providers, NS, NAME, now, self.emit)

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    @property
    def obj(self) -> dict[str, Any]:
        obj = self.cluster.get("ModelRelease", NS, NAME)
        assert obj is not None
        return obj

    @property
    def status(self) -> dict[str, Any]:
        return self.obj.get("status") or {}

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def active_job(self) -> str:
        record = self.status["stages"][self.status["stageIndex"]]
        assert record["phase"] == "Training", record
        return record["jobName"]

    def finish_job(self, result: dict[str, Any], now: datetime = T0) -> str:
        """The Job controller: the current stage's Job completes, its pod leaves the trainer's result."""
        name = self.active_job()
        job = self.cluster.get("Job", NS, name)
        assert job is not None
        self.cluster.set_status("Job", NS, name, {"succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]})
        self.pods += 1
        self.cluster.put({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-pod{self.pods}", "namespace": NS,
                         "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "trainer", "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": json.dumps(result)}}}]},
        })
        return name

    def to_canary(self) -> datetime:
        """Release warmup's model as stable, then train grow's and start it as a canary at T0."""
        self.reconcile()
        self.finish_job(result_for("warmup", 0.95, 0))
        self.reconcile()
        self.finish_job(result_for("grow", 0.95, 1))
        self.reconcile()
        assert self.status["phase"] == "Progressing", self.status["message"]
        assert self.status["canary"] is not None
        return T0


def owned_by(obj: dict[str, Any], release: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == release["metadata"]["uid"] and r["kind"] == "ModelRelease" and r["name"] == NAME
               and r.get("controller") for r in refs)


def labelled(obj: dict[str, Any], **extra: str) -> bool:
    return {**MANAGED, **extra}.items() <= (obj["metadata"].get("labels") or {}).items()


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


# A new release.


def test_a_new_release_gets_its_first_training_job() -> None:
    release = Release(base_spec())
    result = release.reconcile()
    assert result.status_written
    assert result.requeue_after is not None and result.requeue_after > 0
    status = release.status
    assert status["phase"] == "Training"
    assert status["observedGeneration"] == 1
    job_name = status["stages"][0]["jobName"]
    assert job_name.startswith("digits-warmup-")
    assert release.cluster.names("Job") == [job_name]
    job = release.cluster.get("Job", NS, job_name)
    assert job is not None
    assert owned_by(job, release.obj)
    assert labelled(job, **{"modelrelease.io/stage": "warmup"})
    assert labelled(job["spec"]["template"], **{"modelrelease.io/stage": "warmup"})
    assert release.cluster.names("Deployment") == [] and release.cluster.names("Service") == []
    assert "TrainingStarted" in release.reasons()
    assert [c.verb for c in release.cluster.writes()] == ["create", "patch_release_status"]


def test_a_second_pass_with_nothing_changed_writes_nothing() -> None:
    release = Release(base_spec())
    release.reconcile()
    before, events, mark = release.status, len(release.events), release.cluster.mark()
    result = release.reconcile()
    assert not result.status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []
    assert release.status == before
    assert release.events[events:] == []


def test_a_job_created_but_not_yet_listed_is_adopted_not_duplicated() -> None:
    release = Release(base_spec())
    release.reconcile()
    job_name = release.active_job()
    release.cluster.unlisted.add(("Job", NS, job_name))  # the watch cache has not seen it yet
    mark = release.cluster.mark()
    result = release.reconcile()
    creates = [c for c in release.cluster.since(mark) if c.verb == "create"]
    assert creates and all(c.adopted and c.name == job_name for c in creates)
    assert not result.status_written
    assert release.cluster.names("Job") == [job_name]


# Training finishes.


def test_the_first_trained_model_becomes_stable_and_is_served() -> None:
    release = Release(base_spec())
    release.reconcile()
    warmup_job = release.finish_job(result_for("warmup", 0.95, 0))
    result = release.reconcile(T0 + timedelta(minutes=5))
    assert result.status_written
    status = release.status
    warmup = status["stages"][0]
    assert warmup["phase"] == "Succeeded"
    assert [(g["metric"], g["verdict"]) for g in warmup["gates"]] == [("accuracy", "Pass")]
    version = result_for("warmup", 0.95, 0)["version"]
    assert status["stable"]["id"] == version
    assert status["stable"]["jobName"] == warmup_job
    assert [v["id"] for v in status["history"]] == [version]
    assert condition(status, "Ready")["status"] == "True"
    # The next stage trains at once, from the stable model.
    assert status["stageIndex"] == 1 and status["phase"] == "Training"
    grow_job = status["stages"][1]["jobName"]
    assert release.cluster.names("Job") == sorted([warmup_job, grow_job])
    # Only the stable track serves: there is nothing to split traffic against yet.
    assert release.cluster.names("Deployment") == ["digits-stable"]
    stable = release.cluster.get("Deployment", NS, "digits-stable")
    assert stable is not None
    assert owned_by(stable, release.obj)
    assert labelled(stable, **{"modelrelease.io/track": "stable"})
    assert stable["spec"]["replicas"] == 10
    template = stable["spec"]["template"]
    assert template["metadata"]["annotations"]["modelrelease.io/version-id"] == version
    assert labelled(template, **{"modelrelease.io/track": "stable",
                                 "modelrelease.io/version": status["stable"]["name"]})
    service = release.cluster.get("Service", NS, NAME)
    assert service is not None
    assert owned_by(service, release.obj) and labelled(service)
    assert {"GatesPassed", "FirstRelease", "TrainingStarted"} <= set(release.reasons())


def test_the_second_model_starts_as_a_canary_beside_the_stable() -> None:
    release = Release(base_spec())
    release.to_canary()
    status = release.status
    assert status["canaryWeight"] == 10
    assert status["canary"]["id"] == result_for("grow", 0.95, 1)["version"]
    assert status["canary"]["parent"] == status["stable"]["id"]
    assert release.cluster.names("Deployment") == ["digits-canary", "digits-stable"]
    canary = release.cluster.get("Deployment", NS, "digits-canary")
    stable = release.cluster.get("Deployment", NS, "digits-stable")
    assert canary is not None and stable is not None
    assert owned_by(canary, release.obj) and labelled(canary, **{"modelrelease.io/track": "canary"})
    assert canary["spec"]["template"]["metadata"]["annotations"]["modelrelease.io/version-id"] == status["canary"]["id"]
    assert stable["spec"]["template"]["metadata"]["annotations"]["modelrelease.io/version-id"] == status["stable"]["id"]
    # The split conserves the replicas: the canary never adds pods.
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (9, 1)
    assert "CanaryStarted" in release.reasons()


def test_new_serving_settings_roll_the_deployment_in_place_without_retraining() -> None:
    release = Release(base_spec())
    release.reconcile()
    release.finish_job(result_for("warmup", 0.95, 0))
    release.reconcile()
    jobs, before = release.cluster.names("Job"), release.cluster.get("Deployment", NS, "digits-stable")
    assert before is not None
    image = "registry.example/model-server:2"
    release.cluster.update_spec("ModelRelease", NS, NAME, base_spec(serving={"replicas": 10, "image": image}))
    mark = release.cluster.mark()
    release.reconcile(T0 + timedelta(minutes=1))
    patches = [c for c in release.cluster.since(mark) if c.verb == "merge_patch"]
    assert [(c.kind, c.name) for c in patches] == [("Deployment", "digits-stable")]
    after = release.cluster.get("Deployment", NS, "digits-stable")
    assert after is not None
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == image
    hash_key = "modelrelease.io/serving-hash"
    assert after["metadata"]["annotations"][hash_key] != before["metadata"]["annotations"][hash_key]
    assert after["spec"]["replicas"] == 10
    assert (after["spec"]["template"]["metadata"]["annotations"]["modelrelease.io/version-id"]
            == release.status["stable"]["id"])
    assert release.cluster.names("Job") == jobs
    assert release.status["phase"] == "Training" and release.status["observedGeneration"] == 2
    mark = release.cluster.mark()
    assert not release.reconcile(T0 + timedelta(minutes=1)).status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []


def test_a_failed_first_training_fails_the_release_without_serving() -> None:
    release = Release(base_spec())
    release.reconcile()
    job_name = release.active_job()
    release.cluster.set_status("Job", NS, job_name, {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}]})
    assert release.reconcile(T0 + timedelta(minutes=1)).status_written
    status = release.status
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "TrainingFailed"
    assert "BackoffLimitExceeded" in status["failure"]["message"]
    assert release.cluster.names("Deployment") == [] and release.cluster.names("Service") == []
    assert ("Warning", "TrainingFailed") in [(t, r) for t, r, _ in release.events]


# Specs that can never work, concurrent writers, deletion.


def test_an_invalid_spec_is_reported_and_creates_nothing() -> None:
    release = Release(base_spec(servng={"replicas": 2}))
    result = release.reconcile()
    assert result.status_written
    status = release.status
    assert status["phase"] == "Invalid"
    assert "spec.servng" in status["message"]
    invalid = condition(status, "InvalidSpec")
    assert (invalid["status"], invalid["reason"]) == ("True", "ValidationFailed")
    assert "spec.servng" in invalid["message"]
    assert invalid["observedGeneration"] == 1
    warnings = [(t, r, m) for t, r, m in release.events if r == "InvalidSpec"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning" and "spec.servng" in warnings[0][2]
    assert [c.verb for c in release.cluster.writes()] == ["patch_release_status"]
    assert release.cluster.names("Job") == [] and release.cluster.names("Deployment") == []
    assert release.cluster.names("Service") == []


def test_an_invalid_spec_is_reported_once() -> None:
    release = Release(base_spec(servng={"replicas": 2}))
    release.reconcile()
    events, mark = len(release.events), release.cluster.mark()
    result = release.reconcile(T0 + timedelta(minutes=1))
    assert not result.status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []
    assert release.events[events:] == []


def test_a_spec_that_turns_invalid_leaves_the_running_release_alone() -> None:
    release = Release(base_spec())
    release.reconcile()
    job_name = release.active_job()
    release.cluster.update_spec("ModelRelease", NS, NAME, {**base_spec(), "stages": []})
    mark = release.cluster.mark()
    assert release.reconcile(T0 + timedelta(seconds=10)).status_written
    assert [c.verb for c in release.cluster.since(mark) if c.is_write] == ["patch_release_status"]
    assert release.status["phase"] == "Invalid"
    assert release.status["observedGeneration"] == 2
    assert release.cluster.names("Job") == [job_name]


def test_a_stale_resource_version_surfaces_as_conflict() -> None:
    release = Release(base_spec())
    release.cluster.write_after_next_read(NS, NAME)
    with pytest.raises(Conflict):
        release.reconcile()
    assert "phase" not in release.status
    # The next pass reads again and records what the first one did, without a second Job.
    assert release.reconcile().status_written
    assert release.status["phase"] == "Training"
    assert release.cluster.names("Job") == [release.active_job()]


def test_a_stale_resource_version_of_an_invalid_spec_surfaces_as_conflict() -> None:
    release = Release(base_spec(servng={}))
    release.cluster.write_after_next_read(NS, NAME)
    with pytest.raises(Conflict):
        release.reconcile()
    assert "phase" not in release.status


@pytest.mark.parametrize("spec", [base_spec(), base_spec(servng={})], ids=["valid", "invalid"])
def test_a_deleting_release_is_left_alone(spec: dict[str, Any]) -> None:
    release = Release(spec, deletionTimestamp="2026-11-01T11:59:00Z", finalizers=["modelrelease.io/finalizer"])
    assert release.reconcile() == PassResult(None, False)
    assert [c.verb for c in release.cluster.calls] == ["get_release"]
    assert release.events == []


def test_a_deleted_release_is_left_alone() -> None:
    release = Release(base_spec())
    release.cluster.objects.clear()
    assert release.reconcile() == PassResult(None, False)
    assert [c.verb for c in release.cluster.calls] == ["get_release"]
    assert release.providers.asked == []


# Analysis.


def stable_queries(queries: list[str]) -> list[str]:
    return [q for q in queries if 'track="stable"' in q]


def check_verdicts(status: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in status["analysis"]["checks"]}


def test_no_query_before_analysis_is_due() -> None:
    release = Release(analysed_spec())
    start = release.to_canary()
    mark = release.cluster.mark()
    result = release.reconcile(start + timedelta(seconds=29))
    assert release.providers.asked == []
    assert not result.status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []


def test_a_healthy_canary_passes_its_analysis_run() -> None:
    release = Release(analysed_spec())
    start = release.to_canary()
    canary, stable = release.status["canary"]["id"], release.status["stable"]["id"]
    result = release.reconcile(start + timedelta(seconds=30))
    assert result.status_written
    assert len(release.providers.asked) == 1
    spec, namespace = release.providers.asked[0]
    assert namespace == NS and spec.analysis.prometheus is not None
    assert release.providers.made[0].closed
    queries = release.providers.queries
    canary_queries = [q for q in queries if 'track="canary"' in q]
    assert {q.split("{")[0] for q in canary_queries} == {"error_rate", "requests", "latency_p99"}
    assert all(f'version="{canary}"' in q for q in canary_queries)
    # Only the relative check (latency, maxRatio) compares with stable.
    assert [q.split("{")[0] for q in stable_queries(queries)] == ["latency_p99"]
    assert all(f'version="{stable}"' in q for q in stable_queries(queries))
    assert set(queries) == set(canary_queries) | set(stable_queries(queries))
    analysis = release.status["analysis"]
    assert check_verdicts(release.status) == {"errors": "Pass", "latency": "Pass"}
    latency = next(c for c in analysis["checks"] if c["name"] == "latency")
    assert (latency["value"], latency["stableValue"]) == (0.20, 0.20)
    assert (analysis["runs"], analysis["lastRunPassed"], analysis["version"]) == (1, True, canary)
    assert release.status["phase"] == "Progressing"


def test_an_analysis_run_is_not_repeated_within_its_interval() -> None:
    release = Release(analysed_spec())
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    mark = release.cluster.mark()
    result = release.reconcile(start + timedelta(seconds=40))
    assert len(release.providers.asked) == 1
    assert not result.status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []
    assert release.status["analysis"]["runs"] == 1


def test_a_failing_canary_is_rolled_back() -> None:
    def errors(promql: str) -> QueryResult:
        if promql.startswith("error_rate") and 'track="canary"' in promql:
            return QueryResult.of(0.5)
        return healthy(promql)

    release = Release(analysed_spec(), Providers(errors))
    start = release.to_canary()
    assert release.reconcile(start + timedelta(seconds=30)).status_written
    status = release.status
    assert check_verdicts(status) == {"errors": "Fail", "latency": "Pass"}
    assert status["analysis"]["failures"] == 1
    assert status["phase"] in ("RollingBack", "RolledBack")
    assert status["canaryWeight"] == 0
    assert (status["failure"]["reason"], status["failure"]["check"]) == ("AnalysisFailed", "errors")
    assert status["failure"]["value"] == 0.5
    assert ("Warning", "AnalysisFailed") in [(t, r) for t, r, _ in release.events]


def test_no_data_for_the_canary_is_inconclusive_not_a_pass() -> None:
    def silent(promql: str) -> QueryResult:
        return QueryResult.no_data("empty result") if 'track="canary"' in promql else healthy(promql)

    release = Release(analysed_spec(), Providers(silent))
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    status = release.status
    assert check_verdicts(status) == {"errors": "Inconclusive", "latency": "Inconclusive"}
    assert status["analysis"]["lastRunPassed"] is False
    assert status["analysis"]["inconclusive"] == 1
    assert status["phase"] == "Progressing"


def test_too_little_canary_traffic_is_inconclusive() -> None:
    def quiet(promql: str) -> QueryResult:
        return QueryResult.of(3) if promql.startswith("requests") else healthy(promql)

    release = Release(analysed_spec(), Providers(quiet))
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    assert check_verdicts(release.status) == {"errors": "Inconclusive", "latency": "Pass"}


def test_a_query_error_is_recorded_as_an_error_not_a_verdict() -> None:
    def rejected(promql: str) -> QueryResult:
        if promql.startswith("latency_p99") and 'track="stable"' in promql:
            return QueryResult.failed("server", "Prometheus answered 503: overloaded")
        return healthy(promql)

    release = Release(analysed_spec(), Providers(rejected))
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    status = release.status
    assert check_verdicts(status) == {"errors": "Pass", "latency": "Error"}
    latency = next(c for c in status["analysis"]["checks"] if c["name"] == "latency")
    assert "overloaded" in latency["reason"]
    assert status["analysis"]["consecutiveErrors"] == 1
    assert status["analysis"]["lastRunPassed"] is False
    assert status["phase"] == "Progressing"


def test_prometheus_down_gives_errors_and_no_verdict() -> None:
    release = Release(analysed_spec(), Providers(lambda _: QueryResult.failed("unreachable", "connection refused")))
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    status = release.status
    assert check_verdicts(status) == {"errors": "Error", "latency": "Error"}
    assert status["analysis"]["successes"] == 0 and status["analysis"]["failures"] == 0
    assert status["phase"] == "Progressing"
    assert release.providers.made[0].closed


def full_weight_spec() -> dict[str, Any]:
    """Two stages; the second's canary goes straight to weight 100."""
    spec = analysed_spec()
    spec["stages"] = spec["stages"][:2]
    spec["stages"][1]["steps"] = [{"weight": 100, "duration": "1m"}]
    return spec


def test_at_weight_100_the_stable_is_not_queried() -> None:
    release = Release(full_weight_spec())
    start = release.to_canary()
    assert release.status["canaryWeight"] == 100
    canary = release.status["canary"]["id"]
    release.reconcile(start + timedelta(seconds=30))
    queries = release.providers.queries
    assert queries
    assert stable_queries(queries) == []
    assert all(f'version="{canary}"' in q for q in queries)
    # The relative bound has nothing to compare with; the absolute one still judges.
    assert check_verdicts(release.status) == {"errors": "Pass", "latency": "Pass"}


def test_at_weight_100_a_broken_absolute_bound_still_fails() -> None:
    def errors(promql: str) -> QueryResult:
        return QueryResult.of(0.5) if promql.startswith("error_rate") else healthy(promql)

    release = Release(full_weight_spec(), Providers(errors))
    start = release.to_canary()
    release.reconcile(start + timedelta(seconds=30))
    assert stable_queries(release.providers.queries) == []
    assert check_verdicts(release.status)["errors"] == "Fail"
