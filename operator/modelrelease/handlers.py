"""kopf wiring, and nothing else: one daemon per ModelRelease drives it; child events only nudge it.

A daemon (not several handlers) is the single writer of a release's status. Changes to the release
and to the Jobs, Pods and Deployments it owns wake it early; otherwise it sleeps as the plan asked.
Handlers are async on purpose: they touch asyncio objects of the operator's loop, and kopf runs
sync handlers in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from modelrelease import api
from modelrelease.adapters.kubernetes import Conflict, KubernetesCluster, configure_client
from modelrelease.api.labels import LABEL_RELEASE
from modelrelease.runtime.providers import prometheus_for
from modelrelease.runtime.reconcile import reconcile_once

IDLE_RECHECK = 60.0
_wakeups: dict[tuple[str, str], asyncio.Event] = {}
log = logging.getLogger(__name__)


def _wakeup(namespace: str, name: str) -> asyncio.Event:
    return _wakeups.setdefault((namespace, name), asyncio.Event())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_client()
    settings.persistence.finalizer = "modelrelease.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelrelease.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="modelrelease.io")
    settings.posting.level = logging.WARNING  # Events come from the planner, not from kopf's log.


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=5.0)
async def drive(name: str, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
    assert namespace, "ModelRelease is a namespaced resource"
    cluster = KubernetesCluster()
    wake = _wakeup(namespace, name)

    def emit(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    while not stopped:
        wake.clear()
        try:
            result = await asyncio.to_thread(
                reconcile_once, cluster, prometheus_for, namespace, name, datetime.now(UTC), emit)
            delay = result.requeue_after if result.requeue_after is not None else IDLE_RECHECK
        except Conflict:
            delay = 0.2  # someone wrote in between: read again and re-plan
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying", namespace, name)
            delay = 5.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(0.05, delay))
    _wakeups.pop((namespace, name), None)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def release_changed(name: str, namespace: str | None, **_: Any) -> None:
    _wakeup(namespace or "", name).set()


def _nudge_owner(labels: Mapping[str, str], namespace: str | None) -> None:
    release = labels.get(LABEL_RELEASE)
    if release and namespace:
        _wakeup(namespace, release).set()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RELEASE: kopf.PRESENT})
async def job_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    _nudge_owner(labels, namespace)


@kopf.on.event("", "v1", "pods", labels={LABEL_RELEASE: kopf.PRESENT})
async def pod_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    _nudge_owner(labels, namespace)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_RELEASE: kopf.PRESENT})
async def deployment_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    _nudge_owner(labels, namespace)


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def released_deleted(name: str, namespace: str | None, **_: Any) -> None:
    # Children carry ownerReferences; the garbage collector removes them.
    _wakeups.pop((namespace or "", name), None)
    log.info("ModelRelease %s/%s deleted; its Jobs, Deployments and Service go with it", namespace, name)
