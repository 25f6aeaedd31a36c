"""The Kubernetes API, narrowed to what the operator does: list by label, create (adopting on 409),
merge-patch, delete, patch the status with optimistic concurrency, and read and replace the user's
HTTPRoute (Gateway API v1) with its resourceVersion.

Only this module imports the kubernetes client. Objects travel as plain dicts (raw JSON), so the
rest of the operator never sees client model classes.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrelease import api
from modelrelease.api.labels import LABEL_RELEASE
from modelrelease.api.status import ModelReleaseStatus
from modelrelease.metrics import API_REQUESTS


class Conflict(Exception):
    """The object changed since it was read (HTTP 409 on a write with a resourceVersion)."""


class Throttled(ApiException):
    """The API server asked to come back later (429, or 503 with Retry-After): ``retry_after`` seconds.

    An ApiException still, so that code which tells errors apart by status keeps working."""

    def __init__(self, status: int, reason: str | None, body: bytes | str | None, retry_after: float) -> None:
        super().__init__(status=status, reason=reason,
                         body=body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"({self.status}) {self.reason}: the API server asks to retry after {self.retry_after:g}s"


def _retry_after(status: int, headers: Any, data: bytes | None) -> float | None:
    """The seconds a 429/503 asks to wait: the Retry-After header (in seconds; an HTTP date is not
    followed), else the Status body's details.retryAfterSeconds. A 429 that names no delay still
    means "slower": one second. None for anything else."""
    if status not in (429, 503):
        return None
    seconds: Any = (headers or {}).get("Retry-After")
    if seconds is None:
        try:
            seconds = ((json.loads(data or b"{}") or {}).get("details") or {}).get("retryAfterSeconds")
        except (ValueError, AttributeError):
            seconds = None
    try:
        return max(0.0, float(seconds))
    except (TypeError, ValueError):
        return 1.0 if status == 429 else None


class Cluster(Protocol):
    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_owned(self, kind: str, namespace: str, release: str) -> list[dict[str, Any]]: ...
    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, kind: str, namespace: str, name: str) -> None: ...
    def patch_release_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...
    def get_http_route(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def replace_http_route(self, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]: ...


def configure_client() -> None:
    """Point the client at the cluster: in-cluster credentials in a pod, else the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


_PATHS = {
    "Job": ("/apis/batch/v1", "jobs"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    # A multi-worker Job's fence: only its own workers reach their TensorFlow port.
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "ModelRelease": (f"/apis/{api.API_VERSION}", api.PLURAL),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    # The user's route, which the operator only reads and replaces (traffic routing).
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
}


_shared: client.ApiClient | None = None


def shared_api_client() -> client.ApiClient:
    """One ApiClient (one connection pool) for the whole process, however many releases it drives."""
    global _shared
    if _shared is None:
        _shared = client.ApiClient()
    return _shared


class KubernetesCluster:
    """Raw REST calls through the kubernetes client's ApiClient (auth, TLS and retries included)."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or shared_api_client()

    def _call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        method, url, headers, payload, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=payload, post_params=post,
                                     _request_timeout=30)
        data = response.read()
        API_REQUESTS.labels(method, str(response.status)).inc()
        if response.status >= 400:
            retry_after = _retry_after(response.status, response.headers, data)
            if retry_after is not None:
                raise Throttled(response.status, response.reason, data, retry_after)
            raise ApiException(status=response.status, reason=response.reason, body=data)
        return json.loads(data) if data else {}

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = _PATHS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path("ModelRelease", namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_owned(self, kind: str, namespace: str, release: str) -> list[dict[str, Any]]:
        selector = [("labelSelector", f"{LABEL_RELEASE}={release}")]
        listing = self._call("GET", self._path(kind, namespace), query=selector)
        return list(listing.get("items") or [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        try:
            return self._call("POST", self._path(obj["kind"], meta["namespace"]), body=obj)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Already there (an earlier pass created it before a restart): adopt, never duplicate.
            return self._call("GET", self._path(obj["kind"], meta["namespace"], meta["name"]))

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name), body=patch,
                          content_type="application/merge-patch+json")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", self._path(kind, namespace, name),
                       body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_release_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return self._call("PATCH", self._path("ModelRelease", namespace, name, "status"), body=patch,
                              content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{namespace}/{name} changed since it was read") from exc
            if isinstance(exc, Throttled):  # refused, not lost: asking again now would only add load
                raise
            landed = self._landed(namespace, name, status)
            if landed is None:
                raise
            return landed
        except Exception:  # no answer at all (a timeout, a reset): the write may still have happened
            landed = self._landed(namespace, name, status)
            if landed is None:
                raise
            return landed

    def get_http_route(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The HTTPRoute, or None when there is none (or no HTTPRoute kind at all: the Gateway API CRDs
        are not installed, which the API server also answers 404)."""
        try:
            return self._call("GET", self._path("HTTPRoute", namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise PermissionError(
                    f"the operator may not read HTTPRoute {namespace}/{name} (403): install the chart with "
                    "trafficRouting.gatewayAPI.enabled=true, or grant get and update on "
                    "gateway.networking.k8s.io httproutes") from exc
            raise

    def replace_http_route(self, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the route as read and changed: its resourceVersion makes a concurrent edit (by the user or
        another controller) answer 409, raised as ``Conflict``, so nobody's change is overwritten."""
        if not (obj.get("metadata") or {}).get("resourceVersion"):
            raise ValueError(f"HTTPRoute {namespace}/{name}: replace it from a read, with metadata.resourceVersion")
        try:
            return self._call("PUT", self._path("HTTPRoute", namespace, name), body=obj)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"HTTPRoute {namespace}/{name} changed since it was read") from exc
            if exc.status == 403:
                raise PermissionError(f"the operator may not update HTTPRoute {namespace}/{name} (403): grant "
                                      "update on gateway.networking.k8s.io httproutes") from exc
            raise

    def _landed(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """The release, if it holds the status just sent although the write was not acknowledged
        (e.g. a 5xx or a timeout after the API server stored it): then the pass goes on as if the
        write succeeded, and its Events are posted, once. None if it does not, or cannot be read."""
        try:
            stored = self.get_release(namespace, name)
        except Exception:
            return None
        if stored is None:
            return None
        kept = ModelReleaseStatus.model_validate(stored.get("status") or {})
        return stored if kept == ModelReleaseStatus.model_validate(status) else None


class KubernetesLeases:
    """coordination.k8s.io/v1 Leases, for leader election: read, create, and replace with the
    resourceVersion read (a concurrent change answers 409: somebody else took it first)."""

    def __init__(self, cluster: KubernetesCluster | None = None):
        self.cluster = cluster or KubernetesCluster()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.cluster._call("GET", self.cluster._path("Lease", namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """The created Lease, or None when another replica created it first."""
        try:
            return self.cluster._call("POST", self.cluster._path("Lease", lease["metadata"]["namespace"]), body=lease)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None:
        """The replaced Lease, or None when it changed since it was read."""
        meta = lease["metadata"]
        try:
            return self.cluster._call("PUT", self.cluster._path("Lease", meta["namespace"], meta["name"]), body=lease)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise


class KubernetesSecretReader:
    """Reads one key of a Secret (analysis auth); the value never leaves memory."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.core = client.CoreV1Api(api_client or shared_api_client())

    def read(self, namespace: str, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, namespace)
        data = secret.data or {}
        if key not in data:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()
