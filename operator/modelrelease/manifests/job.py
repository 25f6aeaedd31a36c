"""The training Job for one stage attempt."""

from __future__ import annotations

from typing import Any

from modelrelease.api.labels import LABEL_STAGE
from modelrelease.api.spec import ModelReleaseSpec, Stage
from modelrelease.api.training_rules import stage_setting
from modelrelease.core.model import CreateJob
from modelrelease.manifests.common import (
    artifact_volume,
    container_security_context,
    labels,
    owner_reference,
    pod_security_context,
    tmp_volume,
)
from modelrelease.manifests.workers import add_workers

# The trainer's documented exit codes: bad configuration and bad data never get better on retry.
EXIT_BAD_CONFIG = 64
EXIT_BAD_DATA = 65
TERMINATION_LOG = "/dev/termination-log"
# Long enough for the operator to read the result after an outage, short enough to clean up.
TTL_AFTER_FINISHED = 7 * 24 * 3600


_setting = stage_setting  # a stage's own setting, else spec.training's


def build_job(spec: ModelReleaseSpec, owner: dict[str, Any], action: CreateJob) -> dict[str, Any]:
    """The stage's training Job: one pod, or an Indexed Job of training.workers pods."""
    stage = next(s for s in spec.stages if s.name == action.stage)
    job = _single_worker_job(spec, owner, action)
    workers = _setting(stage, spec.training, "workers")
    return add_workers(job, workers) if workers > 1 else job


def trainer_args(spec: ModelReleaseSpec, stage: Stage, action: CreateJob) -> list[str]:
    training = stage.training
    assert training is not None
    args = [
        "train",
        "--stage", stage.name,
        "--data", training.data,
        "--output", action.output_path,
        "--epochs", str(training.epochs),
        "--batch-size", str(training.batch_size),
        "--optimizer", training.optimizer.name,
        "--learning-rate", repr(training.optimizer.learning_rate),
        "--weight-decay", repr(training.optimizer.weight_decay),
        "--mixed-precision", _setting(stage, spec.training, "mixed_precision"),
        "--seed", str(training.seed),
        "--eval-fraction", repr(training.eval_fraction),
        "--termination-log", TERMINATION_LOG,
    ]
    if action.init_from is not None:
        args += ["--init-from", action.init_from.path]
    return args + list(_setting(stage, spec.training, "args") or [])


def _single_worker_job(spec: ModelReleaseSpec, owner: dict[str, Any], action: CreateJob) -> dict[str, Any]:
    release = owner["metadata"]["name"]
    stage = next(s for s in spec.stages if s.name == action.stage)
    defaults = spec.training
    job_labels = labels(release, **{LABEL_STAGE: stage.name})
    data_volume, data_mount = artifact_volume(spec.model.storage)
    scratch, scratch_mount = tmp_volume()
    resources = _setting(stage, defaults, "resources")
    container: dict[str, Any] = {
        "name": "trainer",
        "image": _setting(stage, defaults, "image"),
        "args": trainer_args(spec, stage, action),
        "env": [e.wire() for e in (_setting(stage, defaults, "env") or [])]
        + [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "volumeMounts": [data_mount, scratch_mount],
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    command = _setting(stage, defaults, "command")
    if command:
        container["command"] = list(command)
    if resources is not None:
        container["resources"] = resources.wire()
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [data_volume, scratch],
        "automountServiceAccountToken": False,
    }
    node_selector = _setting(stage, defaults, "node_selector")
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = _setting(stage, defaults, "tolerations")
    if tolerations:
        pod_spec["tolerations"] = [t.wire() for t in tolerations]
    account = _setting(stage, defaults, "service_account_name")
    if account:
        pod_spec["serviceAccountName"] = account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": action.name,
            "namespace": owner["metadata"].get("namespace"),
            "labels": job_labels,
            "annotations": {"modelrelease.io/attempt": str(action.attempt)},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": _setting(stage, defaults, "backoff_limit"),
            "activeDeadlineSeconds": _setting(stage, defaults, "active_deadline_seconds"),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In",
                                                          "values": [EXIT_BAD_CONFIG, EXIT_BAD_DATA]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }
