"""The plugin's view of the cluster: releases, their Events, and annotation patches.

kubectl's habits: ``--kubeconfig`` (else $KUBECONFIG, else ~/.kube/config), ``--context``, and the
namespace from ``-n`` or else the context's namespace, else ``default``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modelrelease import api
from modelrelease.api.labels import LABEL_RELEASE, LABEL_TRACK

Object = dict[str, Any]


class PluginError(Exception):
    """Something the user can act on; printed without a traceback, exit code 1."""


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise PluginError(f"cannot read the kubeconfig: {exc}") from None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    if context and chosen is None:
        raise PluginError(f"context {context!r} is not in the kubeconfig")
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


class ReleaseClient:
    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None):
        try:
            api_client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise PluginError(f"cannot read the kubeconfig: {exc}") from None
        api_client.user_agent = "kubectl-modelrelease/0.1.0"
        self.namespace = namespace or _context_namespace(kubeconfig, context)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise PluginError(f"{what}: not found in namespace {self.namespace}") from None
            if exc.status in (401, 403):
                raise PluginError(f"{what}: not allowed ({exc.status}); check your RBAC") from None
            raise PluginError(f"{what}: the API server answered {exc.status} {exc.reason}") from None
        except OSError as exc:  # urllib3 wraps connection failures as OSError subclasses
            raise PluginError(f"{what}: cannot reach the API server ({exc})") from None

    def get(self, name: str) -> Object:
        return self._call(f"modelrelease {name}", self.custom.get_namespaced_custom_object,
                          api.GROUP, api.VERSION, self.namespace, api.PLURAL, name)

    def list_releases(self, all_namespaces: bool = False) -> list[Object]:
        if all_namespaces:
            listing = self._call("modelreleases", self.custom.list_cluster_custom_object,
                                 api.GROUP, api.VERSION, api.PLURAL)
        else:
            listing = self._call("modelreleases", self.custom.list_namespaced_custom_object,
                                 api.GROUP, api.VERSION, self.namespace, api.PLURAL)
        return sorted(listing.get("items") or [], key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def watch(self, name: str, timeout_seconds: int | None = None) -> Iterator[Object]:
        """The release now, then every change to it (ends when the server ends the stream)."""
        yield self.get(name)
        stream = kubernetes.watch.Watch().stream(
            self.custom.list_namespaced_custom_object, api.GROUP, api.VERSION, self.namespace, api.PLURAL,
            field_selector=f"metadata.name={name}", timeout_seconds=timeout_seconds)
        for event in stream:
            if event["type"] == "DELETED":
                raise PluginError(f"modelrelease {name} was deleted")
            if event["type"] in ("ADDED", "MODIFIED"):
                yield event["object"]

    def events(self, name: str, limit: int = 10) -> list[Object]:
        selector = f"involvedObject.kind={api.KIND},involvedObject.name={name}"
        listing = self._call("events", self.core.list_namespaced_event, self.namespace, field_selector=selector)
        items = [self.core.api_client.sanitize_for_serialization(e) for e in listing.items]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                   e["metadata"].get("creationTimestamp") or "")
        return items[-limit:]

    def replicas(self, name: str) -> dict[str, tuple[int, int]]:
        """Ready and wanted replicas of each track's Deployment."""
        listing = self._call("deployments", self.apps.list_namespaced_deployment, self.namespace,
                             label_selector=f"{LABEL_RELEASE}={name}")
        tracks: dict[str, tuple[int, int]] = {}
        for item in listing.items:
            track = (item.metadata.labels or {}).get(LABEL_TRACK)
            if track:
                tracks[track] = ((item.status.ready_replicas if item.status else 0) or 0, item.spec.replicas or 0)
        return tracks

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> Object:
        """One merge patch on metadata.annotations (None removes a key); the spec is never touched."""
        return self._call(f"modelrelease {name}", self.custom.patch_namespaced_custom_object,
                          api.GROUP, api.VERSION, self.namespace, api.PLURAL, name,
                          {"metadata": {"annotations": dict(annotations)}})
