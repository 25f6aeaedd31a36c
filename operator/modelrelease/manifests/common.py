"""Labels, ownership and the hardened pod settings every child object shares."""

from __future__ import annotations

from typing import Any

from modelrelease.api.labels import LABEL_MANAGED_BY, LABEL_NAME, LABEL_RELEASE, MANAGED_BY

RUN_AS_USER = 10001


def labels(release: str, **extra: str) -> dict[str, str]:
    base = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAME: "modelrelease", LABEL_RELEASE: release}
    return {**base, **{k: v for k, v in extra.items() if v}}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """A writable /tmp on an otherwise read-only root filesystem."""
    return {"name": "tmp", "emptyDir": {}}, {"name": "tmp", "mountPath": "/tmp"}


def artifact_volume(storage: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if storage.pvc is not None:
        volume = {"name": "models", "persistentVolumeClaim": {"claimName": storage.pvc.claim_name}}
        mount = {"name": "models", "mountPath": storage.mount_path}
        if storage.pvc.path_prefix:
            mount["subPath"] = storage.pvc.path_prefix
        return volume, mount
    return ({"name": "models", "hostPath": {"path": storage.host_path.path, "type": "DirectoryOrCreate"}},
            {"name": "models", "mountPath": storage.mount_path})
