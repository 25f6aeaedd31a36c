"""
Pods for the model-server processes of a :class:`~.runner.ProcessDeploymentRunner`.

On a cluster every replica of a Deployment is a Pod; here it is a process. This mirror keeps one
v1 Pod per server process in the store, so ``kubectl get pods`` shows the servers beside the
training Pods: owned by their Deployment (collected with it), labelled from the pod template plus
``pod-template-hash``, ``Running`` with a ``Ready`` condition that follows the server's readiness
probe, and the process' loopback port in an annotation. A server that stops takes its Pod with it.

The mirror only reports: deleting one of these Pods does not stop its process (the next change of
the Deployment's servers writes it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from modelrelease_local import errors, timestamps
from modelrelease_local.resources import ApiResource
from modelrelease_local.runner import ServerProcess
from modelrelease_local.selectors import LabelSelector
from modelrelease_local.store import ObjectStore

__all__ = ["MIRROR_LABEL", "PORT_ANNOTATION", "ServerPodMirror", "server_pod"]

logger = logging.getLogger(__name__)
Object = dict[str, Any]

MIRROR_LABEL = "local.modelrelease.io/server-pod"
PORT_ANNOTATION = "local.modelrelease.io/port"


def server_pod(server: ServerProcess) -> Object:
    """The Pod a cluster would show for this replica (without status)."""
    template = copy.deepcopy(dict(server.pod_template))
    template_meta = template.get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), "pod-template-hash": server.template_hash, MIRROR_LABEL: "true"}
    annotations = {**(template_meta.get("annotations") or {}), PORT_ANNOTATION: str(server.port)}
    owner = server.owner
    return {
        "metadata": {
            "name": server.name, "namespace": owner["namespace"], "labels": labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner["name"],
                                 "uid": owner["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {**(template.get("spec") or {}), "nodeName": "embedded-node"},
    }


def server_pod_status(server: ServerProcess, spec: Mapping[str, Any], old: Mapping[str, Any] | None) -> Object:
    """Running while the process lives; Ready as its probe says. Unchanged parts keep their times."""
    old = old or {}
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    now = timestamps.now()
    started = old.get("startTime") or server.started_at

    def condition(kind: str, true: bool) -> Object:
        status = "True" if true else "False"
        before = previous.get(kind)
        since = before["lastTransitionTime"] if before and before.get("status") == status else now
        return {"type": kind, "status": status, "lastTransitionTime": since, "lastProbeTime": None}

    ready = server.ready and server.alive
    containers = spec.get("containers") or []
    return {
        "phase": "Running" if server.alive else "Failed", "startTime": started, "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "qosClass": "BestEffort",
        "conditions": [condition("PodScheduled", True), condition("Initialized", True),
                       condition("ContainersReady", ready), condition("Ready", ready)],
        "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready and index == 0,
             "started": server.alive, "restartCount": 0, "state": {"running": {"startedAt": started}}}
            for index, c in enumerate(containers)],
    }


class ServerSource(Protocol):
    """What the mirror needs of a runner (ProcessDeploymentRunner has it)."""

    on_servers_changed: list[Callable[[], None]]

    def all_servers(self) -> list[ServerProcess]: ...


class ServerPodMirror:
    """Keeps the store's server Pods equal to the runner's processes; ``nudge()`` asks for a pass."""

    def __init__(self, servers: ServerSource) -> None:
        self.servers = servers
        self._wanted = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def nudge(self) -> None:
        """Safe from any thread, and after the loop has gone (then it does nothing)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._wanted.set)

    async def run(self, store: ObjectStore) -> None:
        pods = store.registry.get("", "v1", "pods")
        deployments = store.registry.get("apps", "v1", "deployments")
        assert pods is not None and deployments is not None
        self._loop = asyncio.get_running_loop()
        self.servers.on_servers_changed.append(self.nudge)
        self._wanted.set()  # one pass at start: Pods left from an earlier run of the store go
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                try:
                    self.sync(store, pods, deployments, self.servers.all_servers())
                except Exception:  # a mirror must not take the controllers down with it
                    logger.exception("Could not mirror the server processes as Pods")
        finally:
            self.servers.on_servers_changed.remove(self.nudge)
            self._loop = None

    @staticmethod
    def sync(store: ObjectStore, pods: ApiResource, deployments: ApiResource, servers: Iterable[ServerProcess]) -> None:
        def owner_exists(server: ServerProcess) -> bool:  # a deleted Deployment's servers are on their way out
            found = store.find(deployments, server.owner["namespace"], server.owner["name"])
            return found is not None and found["metadata"]["uid"] == server.owner["uid"]

        wanted = {(s.owner["namespace"], s.name): s for s in servers if owner_exists(s)}
        for pod in store.list_objects(pods, labels=LabelSelector.parse(f"{MIRROR_LABEL}=true")):
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if key not in wanted:
                with contextlib.suppress(errors.ApiError):
                    store.delete(pods, *key)
        for (namespace, name), server in wanted.items():
            found = store.find(pods, namespace, name)
            try:
                pod = found if found is not None else store.create(pods, namespace, server_pod(server))
            except errors.ApiError as exc:  # e.g. its Deployment's namespace is being deleted
                logger.warning("Could not create the Pod of server %s: %s", name, exc)
                continue
            status = server_pod_status(server, pod.get("spec") or {}, pod.get("status"))
            if status != pod.get("status"):
                with contextlib.suppress(errors.ApiError):
                    store.replace(pods, namespace, name, {"status": status}, subresource="status")
