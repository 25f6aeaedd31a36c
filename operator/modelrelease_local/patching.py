"""
The patch formats of the Kubernetes API, applied to plain JSON-like dicts.

* JSON merge patch (RFC 7386, by ``json_merge_patch``): dicts merge recursively, ``null``
  deletes a key, everything else (lists included) replaces the old value.
* JSON patch (RFC 6902, by ``jsonpatch``): a list of operations, including ``test``.
* Strategic merge patch: a merge patch that knows which lists of built-in kinds
  merge by a key (containers by ``name``, conditions by ``type``, …) and obeys
  the ``$patch``/``$retainKeys``/``$setElementOrder``/``$deleteFromPrimitiveList``
  directives instead of storing them literally.

All functions return new values and never modify their arguments.
"""

from __future__ import annotations

import copy
from typing import Any

import json_merge_patch
import jsonpatch
import jsonpointer

__all__ = [
    "PatchError", "PatchFormatError", "PatchType",
    "apply_json_patch", "apply_merge_patch", "apply_patch", "apply_strategic_merge_patch",
]


class PatchType:
    """The patch content types of the Kubernetes API."""
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"  # server-side apply, approximated as a merge patch

    ALL = frozenset({MERGE, JSON, STRATEGIC, APPLY})


class PatchError(Exception):
    """A patch cannot be applied (a failed ``test``, a missing path, a malformed operation)."""


class PatchFormatError(PatchError):
    """The patch document itself is of the wrong shape for its type."""


def apply_patch(patch_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a patch of a given content type to an object; the result must be an object too."""
    if patch_type in (PatchType.MERGE, PatchType.APPLY, PatchType.STRATEGIC) and not isinstance(patch, dict):
        raise PatchFormatError(f"a {patch_type} patch must be a JSON object")
    if patch_type in (PatchType.MERGE, PatchType.APPLY):
        result = apply_merge_patch(target, patch)
    elif patch_type == PatchType.STRATEGIC:
        result = apply_strategic_merge_patch(target, patch)
    elif patch_type == PatchType.JSON:
        result = apply_json_patch(target, patch)
    else:
        raise PatchFormatError(f"unsupported patch type: {patch_type}")
    if not isinstance(result, dict):
        raise PatchFormatError("the patch does not produce an object")
    return result


def apply_merge_patch(target: Any, patch: Any) -> Any:
    # json_merge_patch.merge updates its first argument in place and keeps the patch's own values.
    return json_merge_patch.merge(copy.deepcopy(target), copy.deepcopy(patch))


def apply_json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("A JSON patch must be a list of operations.")
    try:
        # jsonpatch copies the target but stores the operations' values as they are.
        return jsonpatch.JsonPatch(copy.deepcopy(operations)).apply(target)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(str(exc)) from None


# Strategic merge patch. The schemas of the built-in kinds are not available here, so the merge keys
# are known by the field names, which are unambiguous across the built-in kinds in practice.

_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),  # containers use containerPort, services use port
    "topologySpreadConstraints": ("topologyKey",),
    "secrets": ("name",),
}
_MERGED_PRIMITIVE_LISTS = {"finalizers"}
_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVES_PREFIX = "$deleteFromPrimitiveList/"


def _strip_directives(value: Any) -> Any:
    """Remove any leftover directives from a value that is stored as is (e.g. a replaced subtree)."""
    if isinstance(value, dict):
        return {
            key: _strip_directives(item) for key, item in value.items()
            if key not in (_DIRECTIVE, _RETAIN_KEYS)
            and not key.startswith((_ORDER_PREFIX, _DELETE_PRIMITIVES_PREFIX))
        }
    if isinstance(value, list):
        return [_strip_directives(item) for item in value if not _is_directive_item(item)]
    return copy.deepcopy(value)


def _is_directive_item(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {_DIRECTIVE}


def _merge_key_for(field: str, items: list[Any]) -> str | None:
    for key in _MERGE_KEYS.get(field, ()):
        if all(isinstance(item, dict) and key in item for item in items if not _is_directive_item(item)):
            return key
    return None


def _merge_list(field: str, old: Any, new: list[Any]) -> list[Any]:
    if any(_is_directive_item(item) and item[_DIRECTIVE] == "replace" for item in new):
        return _strip_directives([item for item in new if not _is_directive_item(item)])
    old_list = old if isinstance(old, list) else []
    if field in _MERGED_PRIMITIVE_LISTS:
        return copy.deepcopy(old_list) + [item for item in new if item not in old_list]
    merge_key = _merge_key_for(field, old_list + new)
    if merge_key is None:
        return _strip_directives(new)
    result = copy.deepcopy(old_list)
    for item in new:
        if _is_directive_item(item):
            continue
        index = next((i for i, old_item in enumerate(result) if old_item.get(merge_key) == item[merge_key]), None)
        if item.get(_DIRECTIVE) == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = apply_strategic_merge_patch(result[index], item)
    return result


def _reorder(items: list[Any], order: list[Any], field: str) -> list[Any]:
    merge_key = _merge_key_for(field, items)

    def position(item: Any) -> int:
        probe = {merge_key: item.get(merge_key)} if merge_key and isinstance(item, dict) else item
        return order.index(probe) if probe in order else len(order)

    return sorted(items, key=position)  # stable: unlisted items keep their relative order at the end


def apply_strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return None
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_ORDER_PREFIX):
            orders[key[len(_ORDER_PREFIX):]] = value if isinstance(value, list) else []
        elif key.startswith(_DELETE_PRIMITIVES_PREFIX):
            field = key[len(_DELETE_PRIMITIVES_PREFIX):]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [item for item in result[field] if item not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        elif isinstance(value, dict):
            merged = apply_strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order, field)
    retained = patch.get(_RETAIN_KEYS)
    if isinstance(retained, list):
        result = {key: value for key, value in result.items() if key in retained}
    return result
