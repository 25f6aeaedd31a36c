"""kopf wiring, and nothing else: one daemon per ModelRelease drives it; watches feed its caches.

A daemon (not several handlers) is the single writer of a release's status. It reads the release
from kopf's live body and its children from in-memory indexes fed by kopf's watches (one stream per
kind for the whole operator), so a settled release costs the API server nothing. Events wake it
early only when something it did not cause changed: a child's status, the release's spec (its
generation), its request annotations, or a deletion; otherwise it sleeps as the plan asked, with a
long jittered resync against missed events. Handlers are async on purpose: they touch asyncio
objects of the operator's loop, and kopf runs sync handlers in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from modelrelease import api, metrics
from modelrelease.adapters.kubernetes import Conflict, KubernetesCluster, KubernetesLeases, Throttled, configure_client
from modelrelease.api.labels import ANNOTATION_PAUSED, LABEL_RELEASE, REQUEST_PREFIX
from modelrelease.runtime.backoff import Backoff, RetryDelays
from modelrelease.runtime.cache import CachedCluster, Freshest, ReleaseKey, trim
from modelrelease.runtime.leadership import LeaderElector, LeaseSettings
from modelrelease.runtime.providers import prometheus_for
from modelrelease.runtime.reconcile import reconcile_once
from modelrelease.runtime.route import restore_route
from modelrelease.runtime.telemetry import PassObserver

RESYNC = 300.0
"""Seconds a settled release sleeps before looking again anyway (±20%), in case an event was missed."""
_wakeups: dict[ReleaseKey, asyncio.Event] = {}
_seen_release: dict[ReleaseKey, tuple[Any, ...]] = {}
_seen_status: dict[str, str] = {}
_cluster: KubernetesCluster | None = None
_observer = PassObserver()
_election: LeaseSettings | None = None
_leading = asyncio.Event()
"""Set while this replica may act: always without leader election, else while it holds the Lease."""
log = logging.getLogger(__name__)


def use_leader_election(settings: LeaseSettings | None) -> None:
    """Called by `modelrelease run` before kopf starts."""
    global _election
    _election = settings


def _wakeup(key: ReleaseKey) -> asyncio.Event:
    return _wakeups.setdefault(key, asyncio.Event())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    global _cluster
    configure_client()
    _cluster = KubernetesCluster()  # one API client, one connection pool, for every release
    settings.persistence.finalizer = "modelrelease.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelrelease.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelrelease.io")
    settings.posting.level = logging.WARNING  # Events come from the planner, not from kopf's log.
    # kopf retries its own requests (watches, finalizer and annotation patches, Events) on 5xx, 429
    # (never sooner than Retry-After), 403 and timeouts: with jittered, growing delays here, so that a
    # restarted API server is not met by every replica at once, and for about two minutes, not 54 s.
    settings.networking.error_backoffs = RetryDelays()
    settings.posting.default_backoffs = RetryDelays()
    # Above kube-apiserver's own 60 s request timeout (it answers 504 then, rather than leaving the
    # client unsure whether a write happened); kopf's default, five minutes, leaves a hung request hanging.
    settings.networking.request_timeout = 90.0
    if _election is None:
        _leading.set()
    else:
        elector = LeaderElector(KubernetesLeases(_cluster), _election)
        memo["elector"] = elector
        memo["election"] = asyncio.create_task(_elect(elector), name="leader election")


async def _elect(elector: LeaderElector) -> None:
    while True:
        delay = await asyncio.to_thread(elector.step)
        if elector.leading:
            _leading.set()
        else:
            _leading.clear()
        await asyncio.sleep(delay)


@kopf.on.cleanup()
async def stop_electing(memo: kopf.Memo, **_: Any) -> None:
    task, elector = memo.get("election"), memo.get("elector")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if elector is not None:
        _leading.clear()
        await asyncio.to_thread(elector.release)


# The children, indexed by the release they belong to. Only trainer pods matter (their termination
# message is the training result); model-server pods are summed up by their Deployment's status.
@kopf.index("batch", "v1", "jobs", labels={LABEL_RELEASE: kopf.PRESENT})
async def release_jobs(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels[LABEL_RELEASE]): trim("Job", body)}


@kopf.index("", "v1", "pods", labels={LABEL_RELEASE: kopf.PRESENT, "job-name": kopf.PRESENT})
async def release_pods(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels[LABEL_RELEASE]): trim("Pod", body)}


@kopf.index("apps", "v1", "deployments", labels={LABEL_RELEASE: kopf.PRESENT})
async def release_deployments(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels[LABEL_RELEASE]): trim("Deployment", body)}


@kopf.index("", "v1", "services", labels={LABEL_RELEASE: kopf.PRESENT})
async def release_services(*, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", labels[LABEL_RELEASE]): trim("Service", body)}


def _snapshot(index: kopf.Index, key: ReleaseKey) -> list[dict[str, Any]]:
    return [copy.deepcopy(dict(value)) for value in index.get(key, [])]


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=5.0)
async def drive(*, name: str, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped,
                **indexes: Any) -> None:
    assert namespace, "ModelRelease is a namespaced resource"
    assert _cluster is not None, "the startup handler configures the API client"
    key = (namespace, name)
    wake = _wakeup(key)
    freshest = Freshest()
    backoff = Backoff()

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    while not stopped:
        if not _leading.is_set():
            # A standby keeps its caches warm and writes nothing until it holds the Lease.
            freshest = Freshest()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_leading.wait(), timeout=5.0)
            continue
        wake.clear()
        release, stored = freshest.pick(copy.deepcopy(dict(body)))
        view = CachedCluster(_cluster, release, {
            kind: _snapshot(indexes[f"release_{kind.lower()}s"], key)
            for kind in ("Job", "Pod", "Deployment", "Service")})
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(
                reconcile_once, view, prometheus_for, namespace, name, datetime.now(UTC), emit,
                stored=stored, defer_routine_runs=True)
            freshest.remember(release, result)
            _observer.passed(namespace, name, result, datetime.now(UTC))
            delay = result.requeue_after if result.requeue_after is not None else RESYNC * random.uniform(0.8, 1.2)
            outcome = "ok"
            backoff.succeeded()
        except Conflict:
            delay, outcome = backoff.conflict(), "conflict"  # someone wrote in between: read again and re-plan
        except Throttled as exc:
            delay, outcome = backoff.throttled(exc.retry_after), "throttled"
            log.warning("reconcile of %s/%s throttled by the API server; retrying in %.1fs", namespace, name, delay)
        except Exception:
            delay, outcome = backoff.error(), "error"
            log.exception("reconcile of %s/%s failed; retrying in %.1fs", namespace, name, delay)
        metrics.RECONCILE_PASSES.labels(outcome).inc()
        metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
        if outcome == "throttled":
            # The server named the delay: no event may shorten it (only the daemon's stop).
            await stopped.wait(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(0.05, delay))
    _wakeups.pop(key, None)


def _requests_of(annotations: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(REQUEST_PREFIX) or k ==
                        ANNOTATION_PAUSED))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def release_changed(*, name: str, namespace: str | None, type: str | None, body: kopf.Body, **_: Any) -> None:
    # The operator's own status patches change neither the generation nor the request annotations.
    key = (namespace or "", name)
    meta = body.get("metadata") or {}
    seen = (meta.get("generation"), _requests_of(meta.get("annotations") or {}), bool(meta.get("deletionTimestamp")))
    if type == "DELETED" or _seen_release.get(key) != seen:
        _seen_release[key] = seen
        _wakeup(key).set()


def _nudge_owner(namespace: str | None, labels: Mapping[str, str], uid: str, type: str | None,
                 status: Any) -> None:
    """Wake the owner when a child's status moved or the child went; its spec is the operator's own."""
    release = labels.get(LABEL_RELEASE)
    if not release or not namespace:
        return
    if type == "DELETED":
        _seen_status.pop(uid, None)
        _wakeup((namespace, release)).set()
        return
    fingerprint = json.dumps(status or {}, sort_keys=True, default=str)
    if _seen_status.get(uid) != fingerprint:
        _seen_status[uid] = fingerprint
        _wakeup((namespace, release)).set()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RELEASE: kopf.PRESENT})
async def job_changed(*, namespace: str | None, labels: Mapping[str, str], uid: str, type: str | None,
                      status: Any, **_: Any) -> None:
    _nudge_owner(namespace, labels, uid, type, status)


@kopf.on.event("", "v1", "pods", labels={LABEL_RELEASE: kopf.PRESENT, "job-name": kopf.PRESENT})
async def pod_changed(*, namespace: str | None, labels: Mapping[str, str], uid: str, type: str | None,
                      status: Any, **_: Any) -> None:
    _nudge_owner(namespace, labels, uid, type, status)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_RELEASE: kopf.PRESENT})
async def deployment_changed(*, namespace: str | None, labels: Mapping[str, str], uid: str, type: str | None,
                             status: Any, **_: Any) -> None:
    _nudge_owner(namespace, labels, uid, type, status)


@kopf.on.event("", "v1", "services", labels={LABEL_RELEASE: kopf.PRESENT})
async def service_changed(*, namespace: str | None, labels: Mapping[str, str], uid: str, type: str | None,
                          **_: Any) -> None:
    # Only its existence matters: a Service's status never moves for a ClusterIP Service.
    _nudge_owner(namespace, labels, uid, type, type)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def released_deleted(*, name: str, namespace: str | None, spec: Any, **_: Any) -> None:
    # Children carry ownerReferences; the garbage collector removes them. The HTTPRoute is the user's:
    # it goes back to all traffic on the stable first, while the stable's pods still serve (the
    # finalizer holds the release, and so its Deployments, until this handler succeeds; kopf retries).
    routing = (spec or {}).get("serving", {}).get("trafficRouting")
    if routing and namespace:
        assert _cluster is not None, "the startup handler configures the API client"
        try:
            parsed = api.parse_spec(dict(spec))
        except api.InvalidSpecError:
            parsed = None  # an invalid spec never routed anything
        if parsed is not None:
            await asyncio.to_thread(restore_route, _cluster, parsed, namespace, name)
    key = (namespace or "", name)
    _wakeups.pop(key, None)
    _seen_release.pop(key, None)
    _observer.forget(*key)
    log.info("ModelRelease %s/%s deleted; its Jobs, Deployments and Service go with it", namespace, name)
