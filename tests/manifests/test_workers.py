"""A multi-worker stage's Job (Indexed, one pod per worker) and its headless Service: valid, addressable, owned."""

from __future__ import annotations

import kubernetes_validate
import pytest

from modelrelease.api import parse_spec
from modelrelease.api.status import ModelVersion
from modelrelease.core.model import CreateJob
from modelrelease.core.naming import job_name, worker_service_name
from modelrelease.manifests.job import build_job
from modelrelease.manifests.workers import WORKER_PORT, build_worker_network_policy, build_worker_service, workers_of
from tests.core.world import base_spec

OWNER = {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
         "metadata": {"name": "digits", "namespace": "ml", "uid": "0b7e6c1e-0000-4000-8000-000000000001"}}
PARENT = ModelVersion(id="sha256:" + "a" * 64, name="warmup-aaaaaaaaaaaa", path="/models/digits/j1", stage="warmup")
JOB_UID = "7d1f0000-0000-4000-8000-0000000000aa"


def _spec(workers: int = 2, stage_workers: int | None = None):
    raw = base_spec()
    raw["training"] = {"workers": workers, "backoffLimit": 3,
                       "resources": {"requests": {"cpu": "4"}, "limits": {"nvidia.com/gpu": 2, "memory": "16Gi"}}}
    if stage_workers is not None:
        raw["stages"][1]["training"]["workers"] = stage_workers
    return parse_spec(raw)


def _job(spec, stage: str = "grow", name: str = "digits-grow-1234abcd"):
    action = CreateJob(name=name, stage=stage, attempt=1, output_path=f"/models/digits/{name}", init_from=PARENT)
    return build_job(spec, OWNER, action)


def _created(job):
    """The Job as the API answers its creation: with a uid."""
    return {**job, "metadata": {**job["metadata"], "uid": JOB_UID}}


def test_a_multi_worker_job_is_an_indexed_job_of_one_pod_per_worker():
    job = _job(_spec(workers=4))
    kubernetes_validate.validate(job, "1.33", strict=True)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["backoffLimit"] == 12  # a worker's failure restarts every worker: each retry costs four
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == worker_service_name("digits-grow-1234abcd")
    container = pod["containers"][0]
    assert container["args"][-2:] == ["--workers", "4"]
    hosts = next(e["value"] for e in container["env"] if e["name"] == "TRAINER_WORKER_HOSTS").split(",")
    assert hosts == [f"digits-grow-1234abcd-{i}.digits-grow-1234abcd.ml.svc:{WORKER_PORT}" for i in range(4)]
    assert container["ports"] == [{"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2  # per worker, as given
    assert workers_of(job) == 4 and spec["template"]["metadata"]["labels"]["modelrelease.io/workers"] == "4"
    # The policy of one pod holds for each worker: bad config or data fails the stage at once.
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [64, 65]


def test_one_worker_keeps_the_plain_job():
    job = _job(_spec(workers=1))
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    assert "--workers" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job["spec"]["backoffLimit"] == 3 and workers_of(job) == 1


def test_a_stage_overrides_the_workers():
    spec = _spec(workers=1, stage_workers=3)
    assert _job(spec, "grow")["spec"]["completions"] == 3
    assert "completionMode" not in _job(spec, "warmup", "digits-warmup-1234abcd")["spec"]


def test_the_headless_service_addresses_the_workers_and_goes_with_the_job():
    job = _job(_spec(workers=2))
    service = build_worker_service(_created(job))
    kubernetes_validate.validate(service, "1.33", strict=True)
    assert service["metadata"]["name"] == job["spec"]["template"]["spec"]["subdomain"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    owner = service["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": JOB_UID,
                      "controller": True}]


@pytest.mark.parametrize("release", ["r" * 63, "9" + "x" * 62, "a.b.c-" + "d" * 40])
def test_every_worker_host_is_a_dns_label_for_the_longest_names(release):
    name = job_name(release, "s" * 30, 99, 99, "f" * 16, workers=64)
    owner = {**OWNER, "metadata": {**OWNER["metadata"], "name": release}}
    raw = base_spec()
    raw["training"] = {"workers": 64}
    raw["stages"][0]["name"] = "s" * 30
    for stage in raw["stages"]:
        stage["training"]["batchSize"] = 64
    spec = parse_spec(raw)
    job = build_job(spec, owner, CreateJob(name, "s" * 30, 99, f"/models/{name}", None))
    kubernetes_validate.validate(job, "1.33", strict=True)
    service = build_worker_service(_created(job))
    kubernetes_validate.validate(service, "1.33", strict=True)
    for index in range(64):
        host = f"{name}-{index}"
        assert len(host) <= 63 and "." not in host and host[0].isalnum()
    assert service["metadata"]["name"][0].isalpha()


def test_each_worker_derives_its_place_in_the_cluster_from_what_the_job_gives_it():
    """The Job's args and env, plus the JOB_COMPLETION_INDEX Kubernetes adds, are what the trainer needs."""
    from modelrelease_trainer.cli import build_parser
    from modelrelease_trainer.distributed import resolve_cluster

    job = _job(_spec(workers=3))
    container = job["spec"]["template"]["spec"]["containers"][0]
    parsed = build_parser().parse_args(container["args"])
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    clusters = [resolve_cluster(parsed.workers, {**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(3)]
    assert parsed.workers == 3
    assert [c.index for c in clusters] == [0, 1, 2] and [c.is_chief for c in clusters] == [True, False, False]
    assert clusters[0].hosts == tuple(env["TRAINER_WORKER_HOSTS"].split(","))


def test_only_the_jobs_own_workers_may_reach_their_port():
    job = _job(_spec(workers=2))
    policy = build_worker_network_policy(_created(job))
    kubernetes_validate.validate(policy, "1.33", strict=True)
    own = {"matchLabels": {"batch.kubernetes.io/job-name": job["metadata"]["name"]}}
    assert policy["spec"]["podSelector"] == own  # it fences these pods, and nothing else in the namespace
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": own}],
                                          "ports": [{"protocol": "TCP", "port": WORKER_PORT}]}]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == JOB_UID
