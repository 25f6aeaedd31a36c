"""
Label and field selectors as the Kubernetes API parses them from query strings.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
``a>1``, ``a<1``; comma-separated requirements must all hold.

Field selectors: ``path=value``, ``path==value``, ``path!=value``; the path is a dotted path into
the object (``metadata.name``, ``status.phase``, ``involvedObject.uid``), so that any field that
a client filters on (kubectl's event lookups included) works without per-kind tables.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FieldSelector", "LabelSelector", "SelectorError"]


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


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    text: str
    _terms: tuple[tuple[str, bool, str], ...] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        terms: list[tuple[str, bool, str]] = []
        for part in _split_requirements(text or ""):
            match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
            if not match:
                raise SelectorError(f"Unparseable field selector requirement: {part!r}")
            terms.append((match.group(1), match.group(2) != "!=", match.group(3)))
        return cls(text or "", tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in self._terms)

    def value_of(self, path: str) -> str | None:
        """The required value of an equality term for a field, if the selector pins it."""
        for term_path, equal, value in self._terms:
            if term_path == path and equal:
                return value
        return None
