"""Carry out a plan's actions against the cluster, each one idempotent.

Events are posted apart (``emit_events``), after the status patch that records what they describe:
a pass whose status patch loses a race is planned again, and must not have announced anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelrelease.adapters.kubernetes import Cluster
from modelrelease.api.labels import ANNOTATION_SERVING_HASH
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.core.model import Action, ApplyDeployment, CreateJob, DeleteJob, EmitEvent, EnsureService, SetRoute
from modelrelease.core.naming import deployment_name, serving_hash
from modelrelease.manifests.job import build_job
from modelrelease.manifests.serving import build_deployment, build_service, build_track_service, pod_template
from modelrelease.manifests.workers import build_worker_network_policy, build_worker_service, workers_of
from modelrelease.runtime.route import set_route

EmitFn = Callable[[str, str, str], None]


def execute(cluster: Cluster, spec: ModelReleaseSpec, owner: dict[str, Any], actions: list[Action]) -> None:
    """Every action but events."""
    namespace = owner["metadata"]["namespace"]
    release = owner["metadata"]["name"]
    for action in actions:
        if isinstance(action, CreateJob):
            job = cluster.create(build_job(spec, owner, action))
            if workers_of(job) > 1:  # the Job first: its children go with it
                ensure_worker_services(cluster, (job,))
        elif isinstance(action, DeleteJob):
            cluster.delete("Job", namespace, action.name)
        elif isinstance(action, ApplyDeployment):
            _apply_deployment(cluster, spec, owner, action)
        elif isinstance(action, EnsureService):
            cluster.create(build_service(spec, owner) if action.track is None
                           else build_track_service(spec, owner, action.track))
        elif isinstance(action, SetRoute):
            set_route(cluster, spec, namespace, release, action.state)
        elif isinstance(action, EmitEvent):
            continue
        else:  # pragma: no cover - the Action union is closed
            raise TypeError(f"unknown action {action!r} for {namespace}/{release}")


def emit_events(actions: list[Action], emit: EmitFn) -> None:
    for action in actions:
        if isinstance(action, EmitEvent):
            emit(action.type, action.reason, action.message)


def _apply_deployment(cluster: Cluster, spec: ModelReleaseSpec, owner: dict[str, Any], action: ApplyDeployment) -> None:
    namespace = owner["metadata"]["namespace"]
    name = deployment_name(owner["metadata"]["name"], action.track)
    if action.version is None:
        # Scaling only. The planner asks for this only when the Deployment was observed.
        cluster.merge_patch("Deployment", namespace, name, {"spec": {"replicas": action.replicas}})
        return
    wanted_template = pod_template(spec, owner["metadata"]["name"], action.track, action.version)
    settings = serving_hash(spec)
    if not action.exists:
        created = cluster.create(build_deployment(spec, owner, action.track, action.version, action.replicas))
        current = created.get("spec") or {}
        stale = (created.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_SERVING_HASH) != settings
        if not stale and current.get("replicas") == action.replicas and current.get("template") == wanted_template:
            return  # just created as wanted (or adopted, already as wanted)
    # One write for all: a new version or new settings, and the replica count, change together.
    cluster.merge_patch("Deployment", namespace, name, {
        "metadata": {"annotations": {ANNOTATION_SERVING_HASH: settings}},
        "spec": {"replicas": action.replicas, "template": wanted_template},
    })



def ensure_worker_services(cluster: Cluster, jobs: tuple[Mapping[str, Any], ...]) -> None:
    """Give each (running) multi-worker Job its NetworkPolicy and headless Service, adopted when they exist:
    an operator stopped between the Job's creation and theirs would otherwise leave the workers unable to
    find each other."""
    for job in jobs:
        # The policy first: a Service seen means its workers are already fenced (the repair looks for Services).
        cluster.create(build_worker_network_policy(dict(job)))
        cluster.create(build_worker_service(dict(job)))
