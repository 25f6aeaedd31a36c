"""The stable and canary Deployments of the model server, the Service in front of both, and (for traffic
routing) one Service per track."""

from __future__ import annotations

import copy
from typing import Any

from modelrelease.api.labels import (
    ANNOTATION_SERVING_HASH,
    ANNOTATION_VERSION_ID,
    LABEL_COMPONENT,
    LABEL_RELEASE,
    LABEL_TRACK,
    LABEL_VERSION,
)
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ModelVersion
from modelrelease.core.naming import deployment_name, serving_hash, track_service_name
from modelrelease.manifests.common import (
    artifact_volume,
    container_security_context,
    labels,
    owner_reference,
    pod_security_context,
    tmp_volume,
)


def _server_container(spec: ModelReleaseSpec, template: dict[str, Any]) -> dict[str, Any]:
    containers = template.setdefault("spec", {}).setdefault("containers", [])
    if not containers:
        containers.append({"name": "server", "image": spec.serving.image,
                           "args": ["serve", "--port", str(spec.serving.port), "--host", "0.0.0.0"]})
    return containers[0]


def pod_template(spec: ModelReleaseSpec, release: str, track: str, version: ModelVersion) -> dict[str, Any]:
    """The server pod for one track: the user's template (if any), hardened, with the model injected."""
    template = copy.deepcopy(spec.serving.template or {})
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **labels(
        release, **{LABEL_TRACK: track, LABEL_VERSION: version.name, LABEL_COMPONENT: "server"})}
    meta["annotations"] = {**meta.get("annotations", {}), ANNOTATION_VERSION_ID: version.id}
    container = _server_container(spec, template)
    injected = {"MODEL_PATH": version.path, "MODEL_VERSION": version.id, "MODEL_NAME": spec.model.name,
                "RELEASE_TRACK": track, "HOME": "/tmp", "TMPDIR": "/tmp"}
    env = [e for e in container.get("env", []) if e.get("name") not in injected]
    container["env"] = env + [{"name": k, "value": v} for k, v in injected.items()]
    container.setdefault("ports", [{"name": "http", "containerPort": spec.serving.port}])
    container.setdefault("readinessProbe", {"httpGet": {"path": "/readyz", "port": spec.serving.port}})
    container.setdefault("livenessProbe", {"httpGet": {"path": "/healthz", "port": spec.serving.port}})
    if spec.serving.resources is not None:
        container.setdefault("resources", spec.serving.resources.wire())
    container["securityContext"] = {**container.get("securityContext", {}), **container_security_context()}
    data_volume, data_mount = artifact_volume(spec.model.storage)
    scratch, scratch_mount = tmp_volume()
    data_mount = {**data_mount, "readOnly": True}
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] not in ("models", "tmp")]
    container["volumeMounts"] = [*mounts, data_mount, scratch_mount]
    pod = template["spec"]
    pod["securityContext"] = {**pod.get("securityContext", {}), **pod_security_context()}
    volumes = [v for v in pod.get("volumes", []) if v["name"] not in ("models", "tmp")]
    pod["volumes"] = [*volumes, data_volume, scratch]
    pod.setdefault("automountServiceAccountToken", False)
    return template


def build_deployment(
    spec: ModelReleaseSpec, owner: dict[str, Any], track: str, version: ModelVersion, replicas: int
) -> dict[str, Any]:
    release = owner["metadata"]["name"]
    selector = {LABEL_RELEASE: release, LABEL_TRACK: track}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(release, track),
            "namespace": owner["metadata"].get("namespace"),
            "labels": labels(release, **{LABEL_TRACK: track}),
            "annotations": {ANNOTATION_SERVING_HASH: serving_hash(spec)},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # No surge: a model server may hold a GPU, and the split already conserves the total.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": pod_template(spec, release, track, version),
        },
    }


def build_service(spec: ModelReleaseSpec, owner: dict[str, Any]) -> dict[str, Any]:
    """``<release>``: both tracks answer, so traffic splits in proportion to ready pods."""
    release = owner["metadata"]["name"]
    return _service(spec, owner, release, labels(release), {LABEL_RELEASE: release, LABEL_COMPONENT: "server"})


def build_track_service(spec: ModelReleaseSpec, owner: dict[str, Any], track: str) -> dict[str, Any]:
    """``<release>-<track>``: one track's pods only, the backend an HTTPRoute weighs against the other
    (the route, not the pod count, decides each track's share)."""
    release = owner["metadata"]["name"]
    return _service(spec, owner, track_service_name(release, track), labels(release, **{LABEL_TRACK: track}),
                    {LABEL_RELEASE: release, LABEL_TRACK: track, LABEL_COMPONENT: "server"})


def _service(spec: ModelReleaseSpec, owner: dict[str, Any], name: str, object_labels: dict[str, str],
             selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"].get("namespace"),
            "labels": object_labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": spec.serving.port, "targetPort": spec.serving.port}],
        },
    }
