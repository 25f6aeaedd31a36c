"""
Where a Pod's volumes live on this machine, and the rewriting of paths between the two views.

A container sees its volumes at their mount paths (``/models``, ``/tmp``); a local process sees
directories of this machine. :class:`PathMap` turns container paths in arguments and environment
values into local ones, and local paths in what a process reports back (a termination message)
into container paths again, so that the API only ever carries cluster paths.

The mapping, per volume of the Pod:

- the artifact volume ``models`` (PVC or hostPath, whatever it names): the local artifact root,
  plus the mount's ``subPath``; every Pod of every release shares it, as pods share a ReadWriteMany
  claim or a single node's directory;
- other PVCs: ``<artifact root>/volumes/pvc/<claim>``; other hostPaths: ``<artifact root>/volumes/host/<path>``;
- emptyDir and anything else (configMap, secret: not emulated, they start empty): a directory in
  the Pod's private scratch folder.

``/tmp`` always maps to the Pod's scratch folder, mounted or not: processes must not share the
machine's ``/tmp`` the way containers would not.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ARTIFACT_VOLUME", "PathMap", "pod_path_map"]

ARTIFACT_VOLUME = "models"


_NAME_CHARS = r"\w.\-~"


def _prefix_pattern(prefixes: list[str]) -> re.Pattern[str]:
    """Any of the prefixes as whole path components (longest first): not inside a longer name such as
    ``/models2`` or ``/x/models``, but after ``=``, ``:``, a space or a quote (``--output=/models/a``,
    ``file:/models/a.csv``, ``cannot read /models/a``)."""
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    return re.compile(rf"(?<![{_NAME_CHARS}/])(?:{alternatives})(?![{_NAME_CHARS}])")


@dataclasses.dataclass(frozen=True)
class PathMap:
    """Pairs of (container path, local path); the longest container paths are matched first."""

    mounts: tuple[tuple[str, pathlib.Path], ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.mounts, key=lambda pair: len(pair[0]), reverse=True))
        object.__setattr__(self, "mounts", ordered)

    def local_dirs(self) -> list[pathlib.Path]:
        return [local for _, local in self.mounts]

    def to_local(self, text: str) -> str:
        """Rewrite container paths in an argument or environment value."""
        return self._rewrite(text, [(mount, str(local)) for mount, local in self.mounts])

    def to_cluster(self, text: str) -> str:
        """Rewrite local paths back to container paths (longest local path first)."""
        return self._rewrite(text, [(str(local), mount) for mount, local in self.mounts])

    def message_to_cluster(self, message: str) -> str:
        """A termination message with local paths turned back into container paths.

        A JSON message is rewritten value by value (so that escaping stays right); other text as a whole.
        """
        try:
            parsed = json.loads(message)
        except ValueError:
            return self.to_cluster(message)
        return json.dumps(self._walk(parsed), separators=(",", ":"))

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.to_cluster(value)
        if isinstance(value, list):
            return [self._walk(item) for item in value]
        if isinstance(value, dict):
            return {key: self._walk(item) for key, item in value.items()}
        return value

    @staticmethod
    def _rewrite(text: str, pairs: list[tuple[str, str]]) -> str:
        targets = {source.rstrip("/") or "/": target.rstrip("/") or "/" for source, target in pairs}
        if not targets:
            return text
        return _prefix_pattern(list(targets)).sub(lambda match: targets[match[0]], text)


def _volume_dir(volume: Mapping[str, Any], artifact_root: pathlib.Path, scratch: pathlib.Path) -> pathlib.Path:
    name = volume.get("name", "")
    if name == ARTIFACT_VOLUME:
        return artifact_root
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if claim:
        return artifact_root / "volumes" / "pvc" / claim
    host = (volume.get("hostPath") or {}).get("path")
    if host:
        return artifact_root / "volumes" / "host" / host.strip("/")
    return scratch / "volumes" / name


def pod_path_map(pod_spec: Mapping[str, Any], container: Mapping[str, Any], artifact_root: pathlib.Path,
                 scratch: pathlib.Path) -> PathMap:
    """The local directories behind one container's mounts (created), ``/tmp`` included."""
    volumes = {volume.get("name"): volume for volume in pod_spec.get("volumes") or []}
    mounts: list[tuple[str, pathlib.Path]] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"), {"name": mount.get("name", "unnamed")})
        local = _volume_dir(volume, artifact_root, scratch)
        if mount.get("name") == "tmp" and "emptyDir" in volume:
            local = scratch / "tmp"
        if mount.get("subPath"):
            local = local / mount["subPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        mounts.append((mount["mountPath"].rstrip("/") or "/", local))
    if not any(path == "/tmp" for path, _ in mounts):
        (scratch / "tmp").mkdir(parents=True, exist_ok=True)
        mounts.append(("/tmp", scratch / "tmp"))
    return PathMap(tuple(mounts))
