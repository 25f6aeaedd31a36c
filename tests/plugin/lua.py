"""Run Argo CD's Lua customizations as Argo CD does: the object as the global `obj`, the script's
return value back as JSON-like data (lupa runs real Lua)."""

from __future__ import annotations

import copy
from typing import Any

import json_merge_patch
import lupa


def _to_lua(runtime: lupa.LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def _from_lua(value: Any, like: Any = None) -> Any:
    """Lua has one table for both: an empty one becomes what stood there before (as Argo CD keeps it)."""
    if lupa.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if not items:
        return [] if isinstance(like, list) else {}
    if all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
        before = like if isinstance(like, list) else []
        return [_from_lua(items[i], before[i - 1] if i <= len(before) else None) for i in range(1, len(items) + 1)]
    before_map = like if isinstance(like, dict) else {}
    return {str(k): _from_lua(v, before_map.get(str(k))) for k, v in items.items()}


def run(script: str, obj: dict[str, Any]) -> Any:
    # Argo CD's VM: the standard libraries, no I/O; os.date is used by actions (as in its own ones).
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    runtime.globals().obj = _to_lua(runtime, copy.deepcopy(obj))
    return _from_lua(runtime.execute(script), obj)


def action_patch(script: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What Argo CD sends for an action: the merge patch from the object to the action's result."""
    changed = run(script, obj)
    return json_merge_patch.create_patch(obj, changed)
