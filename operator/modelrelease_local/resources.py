"""
The resource registry of the embedded API server and the discovery documents built from it.

Built-in resources come from the discovery snapshot bundled with kmock (a real cluster's
``/api`` and ``/apis`` answers), so kubectl sees the usual kinds, short names and categories.
Custom resources appear and disappear with their CustomResourceDefinitions.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import kmock

__all__ = ["ApiResource", "ResourceRegistry", "resources_from_crd", "sort_versions"]

# Bundled discovery data that is not part of a vanilla API server.
_NON_BUILTIN_GROUPS = {"metrics.k8s.io", "gateway.networking.k8s.io"}
_SUBRESOURCE_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}

StorageKey = tuple[str, str]  # (group, plural): all served versions of a resource share one storage


@dataclasses.dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    printer_columns: tuple[Mapping[str, Any], ...] = ()
    custom: bool = False  # defined by a CRD: strategic merge patches are not supported for it
    crd_name: str | None = None
    list_kind_name: str | None = None  # a CRD's spec.names.listKind, if not the usual KindList
    # A CRD version's openAPIV3Schema (None for built-ins): validation, pruning, defaulting, CEL rules.
    schema: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False, hash=False)
    # A CRD version's selectableFields' JSON paths (".spec.color"), besides metadata.name/namespace.
    selectable_fields: tuple[str, ...] = ()

    @property
    def list_kind(self) -> str:
        return self.list_kind_name or f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> StorageKey:
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def __str__(self) -> str:
        return f"{self.plural}.{self.version}.{self.group}" if self.group else f"{self.plural}.{self.version}"


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def _version_priority(version: str) -> tuple[int, int, int, int, str]:
    # The Kubernetes ordering: GA before beta before alpha, higher numbers first, others last.
    match = _VERSION_RE.match(version)
    if not match:
        return (1, 0, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (0, stage, -int(match.group(1)), -int(match.group(3) or 0), version)


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(set(versions), key=_version_priority)


def resources_from_crd(crd: Mapping[str, Any]) -> list[ApiResource]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result: list[ApiResource] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        result.append(ApiResource(
            group=spec["group"],
            version=version["name"],
            plural=names["plural"],
            kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(key for key in ("status", "scale") if subresources.get(key) is not None),
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            custom=True,
            crd_name=(crd.get("metadata") or {}).get("name"),
            list_kind_name=names.get("listKind"),
            schema=(version.get("schema") or {}).get("openAPIV3Schema"),
            selectable_fields=tuple(field.get("jsonPath", "") for field in version.get("selectableFields") or ()),
        ))
    return result


class ResourceRegistry:
    """All resources served now, addressable by group/version/plural, by kind, by short name."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._resources: dict[tuple[str, str, str], ApiResource] = {}
        if builtins:
            self._load_builtins()

    def _load_builtins(self) -> None:
        bundled = kmock.ResourcesArray()
        with warnings.catch_warnings():
            # kmock 0.8 reads its bundle with importlib.resources.read_binary(), deprecated since 3.11.
            warnings.simplefilter("ignore", DeprecationWarning)
            bundled.load_bundled()
        for ref in bundled:
            info = bundled[ref]
            if ref.group in _NON_BUILTIN_GROUPS or not ref.plural or ref.version is None or ref.group is None:
                continue
            self.add(ApiResource(
                group=ref.group,
                version=ref.version,
                plural=ref.plural,
                kind=info.kind or ref.plural.capitalize(),
                singular=info.singular or ref.plural,
                namespaced=bool(info.namespaced),
                verbs=tuple(sorted(info.verbs)),
                short_names=tuple(sorted(info.shortnames)),
                categories=tuple(sorted(info.categories)),
                subresources=frozenset(info.subresources),
            ))

    def add(self, resource: ApiResource) -> None:
        self._resources[resource.group, resource.version, resource.plural] = resource

    def get(self, group: str, version: str, plural: str) -> ApiResource | None:
        return self._resources.get((group, version, plural))

    def replace_crd(self, crd_name: str, resources: Iterable[ApiResource]) -> None:
        self.remove_crd(crd_name)
        for resource in resources:
            self.add(resource)

    def remove_crd(self, crd_name: str) -> None:
        for key, resource in list(self._resources.items()):
            if resource.crd_name == crd_name:
                del self._resources[key]

    def __iter__(self) -> Any:
        return iter(list(self._resources.values()))

    def by_storage(self, storage: StorageKey) -> list[ApiResource]:
        return [res for res in self._resources.values() if res.storage == storage]

    def preferred(self, storage: StorageKey) -> ApiResource | None:
        candidates = {res.version: res for res in self.by_storage(storage)}
        return candidates[sort_versions(candidates)[0]] if candidates else None

    def by_kind(self, api_version: str, kind: str) -> ApiResource | None:
        group, _, version = api_version.rpartition("/")
        for res in self._resources.values():
            if res.group == group and res.version == version and res.kind == kind:
                return res
        return None

    # Discovery documents.

    def groups(self) -> dict[str, list[str]]:
        versions: dict[str, set[str]] = {}
        for group, version, _ in self._resources:
            versions.setdefault(group, set()).add(version)
        return {group: sort_versions(found) for group, found in sorted(versions.items())}

    def api_group_list(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._api_group(group, versions) for group, versions in self.groups().items() if group],
        }

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.groups().get(group)
        return None if not versions or not group else {
            "kind": "APIGroup", "apiVersion": "v1", **self._api_group(group, versions),
        }

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        members = sorted(
            (res for res in self._resources.values() if res.group == group and res.version == version),
            key=lambda res: res.plural,
        )
        if not members:
            return None
        entries: list[dict[str, Any]] = []
        for res in members:
            entry: dict[str, Any] = {
                "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                "kind": res.kind, "verbs": list(res.verbs),
            }
            if res.short_names:
                entry["shortNames"] = list(res.short_names)
            if res.categories:
                entry["categories"] = list(res.categories)
            entries.append(entry)
            for sub in sorted(res.subresources):
                entries.append({
                    "name": f"{res.plural}/{sub}", "singularName": "", "namespaced": res.namespaced,
                    "kind": "Scale" if sub == "scale" else res.kind,
                    **({"group": "autoscaling", "version": "v1"} if sub == "scale" else {}),
                    "verbs": _SUBRESOURCE_VERBS.get(sub, ["get"]),
                })
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }
