"""What a multi-worker stage adds to its Job: the Indexed mode, the workers' addresses, their headless Service.

Kubernetes names each pod of an Indexed Job's index i by the host <job>-<i>; with the template's subdomain set to a
headless Service's name, <job>-<i>.<service>.<namespace>.svc resolves to that pod as soon as it runs, and stays the
same across its retries. The trainer builds TensorFlow's TF_CONFIG from that list and JOB_COMPLETION_INDEX.
"""

from __future__ import annotations

from typing import Any

from modelrelease.api.labels import LABEL_WORKERS
from modelrelease.core.naming import worker_hosts, worker_service_name

__all__ = ["WORKER_PORT", "add_workers", "build_worker_network_policy", "build_worker_service", "worker_service_name",
           "workers_of"]

WORKER_PORT = 2222
WORKER_HOSTS_ENV = "TRAINER_WORKER_HOSTS"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def add_workers(job: dict[str, Any], workers: int) -> dict[str, Any]:
    """Turn a one-pod training Job into an Indexed Job of ``workers`` pods that train together (in place)."""
    meta, spec = job["metadata"], job["spec"]
    name, namespace = meta["name"], meta["namespace"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    for labels in (meta["labels"], spec["template"]["metadata"]["labels"]):
        labels[LABEL_WORKERS] = str(workers)
    spec.update(completionMode="Indexed", completions=workers, parallelism=workers,
                # One failed worker stops the others' collectives: a retry restarts every worker.
                backoffLimit=spec["backoffLimit"] * workers)
    pod["subdomain"] = worker_service_name(name)
    container["args"] = [*container["args"], "--workers", str(workers)]
    container["env"] = [*container["env"], {"name": WORKER_HOSTS_ENV,
                                            "value": ",".join(worker_hosts(name, namespace, workers, WORKER_PORT))}]
    container["ports"] = [{"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"}]
    return job


def _child_of(job: dict[str, Any]) -> dict[str, Any]:
    """The metadata of an object that lives as long as the Job: its name, labels, and the Job as its owner."""
    meta = job["metadata"]
    return {
        "name": worker_service_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": dict(meta.get("labels") or {}),
        # Not blockOwnerDeletion: that would need update rights on jobs/finalizers, for nothing.
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                             "controller": True}],
    }


def build_worker_service(job: dict[str, Any]) -> dict[str, Any]:
    """The headless Service that gives each worker its DNS name, owned by the Job (it goes when the Job goes).

    ``job`` is the Job as the API returned it (its uid). Addresses are published before the pods are ready: the
    workers must find each other to start at all."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_of(job),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_NAME_LABEL: meta["name"]},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "worker", "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }


def build_worker_network_policy(job: dict[str, Any]) -> dict[str, Any]:
    """Only the Job's own workers may reach their port: TensorFlow's worker server runs whatever graph a
    client sends it (reading and writing files on the model volume among others) and has no authentication.
    It selects only these pods, so nothing else in the namespace changes. Owned by the Job, as the Service."""
    meta = job["metadata"]
    workers = {"matchLabels": {JOB_NAME_LABEL: meta["name"]}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _child_of(job),
        "spec": {
            "podSelector": workers,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": workers}], "ports": [{"protocol": "TCP", "port": WORKER_PORT}]}],
        },
    }


def workers_of(job: dict[str, Any]) -> int:
    """How many workers a training Job (as built, or as read back with its labels) trains with."""
    value = ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKERS, "1")
    return int(value) if str(value).isdigit() else 1
