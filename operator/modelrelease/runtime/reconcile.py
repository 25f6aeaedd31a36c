"""One pass for one ModelRelease: observe, plan, execute, and patch the status only if it changed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelrelease.adapters.kubernetes import Cluster
from modelrelease.adapters.prometheus import MetricsProvider
from modelrelease.api import InvalidSpecError, ModelReleaseSpec, ModelReleaseStatus, parse_spec
from modelrelease.core.analysis import routine_run_only
from modelrelease.core.conditions import set_condition
from modelrelease.core.measurement import request_measurements
from modelrelease.core.model import DeploymentObservation, Observations
from modelrelease.core.naming import track_service_name
from modelrelease.core.planner import plan
from modelrelease.core.timestamps import format_timestamp
from modelrelease.runtime.execute import EmitFn, emit_events, ensure_worker_services, execute
from modelrelease.runtime.measure import read_run
from modelrelease.runtime.observe import observe_deployment, observe_job, unserved_worker_jobs
from modelrelease.runtime.route import observe_route

log = logging.getLogger(__name__)
ProviderFactory = Callable[[ModelReleaseSpec, str], MetricsProvider]


@dataclass(frozen=True)
class PassResult:
    requeue_after: float | None
    status_written: bool
    previous: ModelReleaseStatus | None = None
    """The status the pass started from (None when there was no release to plan)."""
    status: ModelReleaseStatus | None = None
    """The status it left (written or not)."""
    written: dict[str, Any] | None = None
    """The release as the status patch returned it: fresher than a watch cache right after the write."""
    spec: ModelReleaseSpec | None = None
    """The spec the pass planned with (None for an invalid one)."""
    deferred: bool = False
    """The new status holds only routine analysis runs and was kept in memory, not written."""


def status_wire(status: ModelReleaseStatus) -> dict[str, Any]:
    # Explicit nulls in objects delete, in a merge patch, what the operator no longer knows (e.g. the
    # canary). Inside lists a null deletes nothing (a list is replaced whole) and a real API server
    # prunes it from a structural schema, so list items carry only the fields they have.
    return _drop_nulls_in_lists(status.model_dump(by_alias=True, mode="json"))


def _drop_nulls_in_lists(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls_in_lists(v, in_list) for k, v in value.items() if not (in_list and v is None)}
    if isinstance(value, list):
        return [_drop_nulls_in_lists(item, True) for item in value]
    return value


def observe(cluster: Cluster, spec: ModelReleaseSpec, status: ModelReleaseStatus, namespace: str, release: str,
            providers: ProviderFactory, now: datetime) -> Observations:
    pods = cluster.list_owned("Pod", namespace, release)
    listed_jobs = cluster.list_owned("Job", namespace, release)
    jobs = {j["metadata"]["name"]: observe_job(j, pods) for j in listed_jobs}
    deployments: dict[str, DeploymentObservation] = {}
    for item in cluster.list_owned("Deployment", namespace, release):
        seen = observe_deployment(item)
        if seen is not None:
            deployments[seen.track] = seen
    services = {item["metadata"]["name"] for item in cluster.list_owned("Service", namespace, release)}
    run = None
    request = request_measurements(spec, status, now, release=release, namespace=namespace)
    if request is not None:
        provider = providers(spec, namespace)
        try:
            run = read_run(provider, request)
        finally:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
    track_services = frozenset(t for t in ("stable", "canary") if track_service_name(release, t) in services)
    return Observations(jobs=jobs, deployments=deployments, service_exists=release in services, analysis=run,
                        route=observe_route(cluster, spec, namespace, release), track_services=track_services,
                        unserved_worker_jobs=unserved_worker_jobs(listed_jobs, services))


def reconcile_once(cluster: Cluster, providers: ProviderFactory, namespace: str, name: str, now: datetime,
                   emit: EmitFn, *, stored: ModelReleaseStatus | None = None,
                   defer_routine_runs: bool = False) -> PassResult:
    """One pass. ``stored`` is the status as the API holds it when the release read carries one kept
    in memory; with ``defer_routine_runs`` a pass that adds only routine analysis runs writes nothing."""
    obj = cluster.get_release(namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return PassResult(None, False)
    generation = obj["metadata"].get("generation")
    current = ModelReleaseStatus.model_validate(obj.get("status") or {})
    try:
        spec = parse_spec(obj.get("spec"))
    except InvalidSpecError as exc:
        return _reject(cluster, obj, current, exc, now, emit)
    observed = observe(cluster, spec, current, namespace, name, providers, now)
    annotations = obj["metadata"].get("annotations") or {}
    result = plan(spec, current, observed, now, release=name, generation=generation, annotations=annotations)
    routine = not result.actions and result.status != current and routine_run_only(stored or current, result.status)
    if defer_routine_runs and routine:
        return PassResult(result.requeue_after, False, current, result.status, None, spec, deferred=True)
    execute(cluster, spec, obj, result.actions)
    ensure_worker_services(cluster, observed.unserved_worker_jobs)
    written = None
    if result.status != current:
        written = cluster.patch_release_status(namespace, name, obj["metadata"]["resourceVersion"],
                                               status_wire(result.status))
    emit_events(result.actions, emit)  # only once the status that they describe is stored
    return PassResult(result.requeue_after, written is not None, current, result.status, written, spec)


def _reject(cluster: Cluster, obj: dict[str, Any], current: ModelReleaseStatus, exc: InvalidSpecError,
            now: datetime, emit: EmitFn) -> PassResult:
    """A spec that can never work: say why in status and an Event, and touch nothing else."""
    message = "; ".join(exc.problems)
    moment = format_timestamp(now)
    generation = obj["metadata"].get("generation")
    conditions = set_condition(current.conditions, "InvalidSpec", True, "ValidationFailed", message, moment,
                               generation)
    rejected = current.model_copy(update={"phase": "Invalid", "message": message, "conditions": conditions,
                                          "observed_generation": generation})
    if rejected == current:
        return PassResult(None, False, current, current)
    meta = obj["metadata"]
    written = cluster.patch_release_status(meta["namespace"], meta["name"], meta["resourceVersion"],
                                           status_wire(rejected))
    emit("Warning", "InvalidSpec", message)
    return PassResult(None, True, current, rejected, written)
