"""
Label and field selectors as the Kubernetes API parses them from query strings.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
``a>1``, ``a<1``; comma-separated requirements must all hold.

Field selectors: ``label=value``, ``label==value``, ``label!=value``. Each resource supports only its
own field labels, as the real server's per-kind tables say (:func:`field_labels`): every kind
``metadata.name`` and ``metadata.namespace``, some kinds more (pods ``spec.nodeName``, ``status.phase``…;
events ``involvedObject.*``, ``reason``, ``type``…), a custom resource its CRD version's
``selectableFields``. Any other label is refused (400, "field label not supported: spec.foo"), as
https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/ documents.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelrelease_local.resources import ApiResource

__all__ = ["FieldSelector", "LabelSelector", "SelectorError", "field_labels"]


class SelectorError(ValueError):
    """A selector cannot be parsed."""


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_requirements(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


Requirement = Callable[[Mapping[str, str]], bool]


def _parse_label_requirement(text: str) -> Requirement:
    if match := _SET_RE.match(text):
        key, operator, values_text = match.group(1), match.group(3), match.group(4)
        values = {value.strip() for value in values_text.split(",") if value.strip()}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _CMP_RE.match(text):
        key, operator, value = match.group(1), match.group(3), match.group(4)
        if operator in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        try:
            number = int(value)
        except ValueError:
            raise SelectorError(f"A numeric value is required for {operator!r}: {text!r}") from None
        if operator == ">":
            return lambda labels: _as_int(labels.get(key)) is not None and _as_int(labels.get(key)) > number  # type: ignore[operator]
        return lambda labels: _as_int(labels.get(key)) is not None and _as_int(labels.get(key)) < number  # type: ignore[operator]
    if match := _EXISTS_RE.match(text):
        negated, key = bool(match.group(1)), match.group(2)
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"Unparseable label selector requirement: {text!r}")


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    text: str
    _requirements: tuple[Requirement, ...] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        text = text or ""
        return cls(text, tuple(_parse_label_requirement(part) for part in _split_requirements(text)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in self._requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


FieldValue = Callable[[Mapping[str, Any]], str]


def _at(path: str, default: str = "") -> FieldValue:
    return lambda obj: _field_value(obj, path) or default


_METADATA: dict[str, FieldValue] = {"metadata.name": _at("metadata.name"),
                                    "metadata.namespace": _at("metadata.namespace")}
_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
# The field labels each built-in resource adds to metadata.name/namespace, and how the real server
# reads them (pkg/registry/*/strategy.go, ToSelectableFields): some are renamed, some have defaults.
_BUILTIN_FIELDS: dict[tuple[str, str], dict[str, FieldValue]] = {
    ("", "pods"): {
        **{label: _at(label) for label in ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                                           "spec.serviceAccountName", "status.phase", "status.podIP",
                                           "status.nominatedNodeName")},
        "spec.hostNetwork": _at("spec.hostNetwork", "false"),
    },
    ("", "events"): {
        **{f"involvedObject.{part}": _at(f"involvedObject.{part}") for part in _INVOLVED},
        "reason": _at("reason"), "reportingComponent": _at("reportingComponent"), "type": _at("type"),
        "source": _at("source.component"),
    },
    ("events.k8s.io", "events"): {
        **{f"regarding.{part}": _at(f"regarding.{part}") for part in _INVOLVED},
        "reason": _at("reason"), "reportingController": _at("reportingController"), "type": _at("type"),
    },
    ("", "secrets"): {"type": _at("type")},
    ("", "namespaces"): {"status.phase": _at("status.phase")},
    ("", "nodes"): {"spec.unschedulable": _at("spec.unschedulable", "false")},
    ("", "replicationcontrollers"): {"status.replicas": _at("status.replicas", "0")},
    ("apps", "replicasets"): {"status.replicas": _at("status.replicas", "0")},
    ("batch", "jobs"): {"status.successful": _at("status.succeeded", "0")},
    ("certificates.k8s.io", "certificatesigningrequests"): {"spec.signerName": _at("spec.signerName")},
}


def field_labels(resource: ApiResource) -> dict[str, FieldValue]:
    """The field labels a resource's field selectors may use, each with how its value is read."""
    if resource.custom:
        custom = {path.lstrip("."): _at(path.lstrip(".")) for path in resource.selectable_fields if path}
        return {**_METADATA, **custom}
    return {**_METADATA, **_BUILTIN_FIELDS.get((resource.group, resource.plural), {})}


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    text: str
    _terms: tuple[tuple[str, bool, str], ...] = dataclasses.field(repr=False, compare=False)
    # Bound to a resource: how each of its field labels is read (unbound: a dotted path into the object).
    _values: Mapping[str, FieldValue] | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        terms: list[tuple[str, bool, str]] = []
        for part in _split_requirements(text or ""):
            match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
            if not match:
                raise SelectorError(f"Unparseable field selector requirement: {part!r}")
            terms.append((match.group(1), match.group(2) != "!=", match.group(3)))
        return cls(text or "", tuple(terms))

    def for_resource(self, resource: ApiResource) -> FieldSelector:
        """This selector, checked against the resource's field labels (SelectorError names the first unknown)."""
        labels = field_labels(resource)
        for path, _, _ in self._terms:
            if path not in labels:
                raise SelectorError(f"field label not supported: {path}")
        return dataclasses.replace(self, _values=labels)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        values = self._values
        return all(((values[path](obj) if values is not None else _field_value(obj, path)) == value) == equal
                   for path, equal, value in self._terms)

    @property
    def empty(self) -> bool:
        return not self._terms

    def value_of(self, path: str) -> str | None:
        """The required value of an equality term for a field, if the selector pins it."""
        for term_path, equal, value in self._terms:
            if term_path == path and equal:
                return value
        return None
