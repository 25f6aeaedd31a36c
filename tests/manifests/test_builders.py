"""The Job, Deployments and Service the operator builds: valid Kubernetes, hardened, owned, labelled."""

from __future__ import annotations

import kubernetes_validate
import pytest

from modelrelease.api import parse_spec
from modelrelease.api.status import ModelVersion
from modelrelease.core.model import CreateJob
from modelrelease.manifests.job import build_job
from modelrelease.manifests.serving import build_deployment, build_service
from tests.core.world import base_spec

OWNER = {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
         "metadata": {"name": "digits", "namespace": "ml", "uid": "0b7e6c1e-0000-4000-8000-000000000001"}}
PARENT = ModelVersion(id="sha256:" + "a" * 64, name="warmup-aaaaaaaaaaaa", path="/models/digits/j1", stage="warmup")


def _spec(**overrides):
    raw = base_spec(**overrides)
    raw["training"] = {"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}},
                       "nodeSelector": {"gpu": "a100"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    return parse_spec(raw)


def _job(spec=None):
    spec = spec or _spec()
    action = CreateJob(name="digits-grow-1234abcd", stage="grow", attempt=1,
                       output_path="/models/digits/digits-grow-1234abcd", init_from=PARENT)
    return build_job(spec, OWNER, action)


def _objects():
    spec = _spec()
    return [_job(spec), build_deployment(spec, OWNER, "canary", PARENT, 3), build_service(spec, OWNER)]


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: o["kind"])
def test_objects_are_valid_kubernetes(obj):
    kubernetes_validate.validate(obj, "1.33", strict=True)


@pytest.mark.parametrize("obj", _objects()[:2], ids=lambda o: o["kind"])
def test_pods_are_hardened(obj):
    pod = obj["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: o["kind"])
def test_children_are_owned_and_labelled(obj):
    meta = obj["metadata"]
    assert meta["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "model-release-operator"
    assert meta["labels"]["modelrelease.io/release"] == "digits"


def test_job_policy_fails_fast_on_bad_config_or_data_and_ignores_disruption():
    job = _job()["spec"]
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                             "values": [64, 65]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600 and job["ttlSecondsAfterFinished"] > 0
    container = job["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert job["template"]["spec"]["nodeSelector"] == {"gpu": "a100"}


def test_job_args_carry_the_stage_and_resume_from_the_parent():
    args = _job()["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert args[0] == "train"
    assert pairs["--stage"] == "grow" and pairs["--optimizer"] == "adamw"
    assert pairs["--data"] == "sklearn:digits?fraction=0.6" and pairs["--init-from"] == PARENT.path


def test_job_args_parse_with_the_trainers_own_parser():
    from modelrelease_trainer.cli import build_parser

    args = _job()["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.stage == "grow" and parsed.optimizer == "adamw" and parsed.init_from == PARENT.path
    assert parsed.epochs == 5 and parsed.batch_size == 32


def test_deployment_serves_the_version_it_was_given():
    deployment = build_deployment(_spec(), OWNER, "canary", PARENT, 3)
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_PATH"] == PARENT.path and env["MODEL_VERSION"] == PARENT.id
    assert env["RELEASE_TRACK"] == "canary" and env["MODEL_NAME"] == "digits"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert deployment["metadata"]["name"] == "digits-canary"


def test_service_selects_servers_of_both_tracks_but_not_trainers():
    service = build_service(_spec(), OWNER)
    deployment = build_deployment(_spec(), OWNER, "stable", PARENT, 3)
    job = _job()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(job_labels.get(k) == v for k, v in service["spec"]["selector"].items())
