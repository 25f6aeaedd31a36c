"""
Server-side printing (``meta.k8s.io/v1 Table``), which kubectl asks for on ``kubectl get``:
a CRD's additionalPrinterColumns (their JSONPath evaluated by jsonpath-ng), or a few columns of the usual
built-in kinds, plus Name and Age; everything else is printed as Name + Age.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonpath_ng.ext
from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError

from modelrelease_local.resources import ApiResource

__all__ = ["render_table", "wants_table"]

Object = Mapping[str, Any]


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in (accept or "")


def _age(timestamp: Any) -> str | None:
    if not isinstance(timestamp, str):
        return None
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@functools.lru_cache(maxsize=256)
def _compile_jsonpath(path: str) -> JSONPath | None:
    # Kubernetes writes `.status.phase` or `{.status.phase}`; jsonpath-ng wants `$.status.phase`.
    path = path.strip()
    path = path[1:-1].strip() if path.startswith("{") and path.endswith("}") else path
    if not path.startswith("$"):
        path = "$" + path if not path or path.startswith((".", "[")) else "$." + path
    try:
        return jsonpath_ng.ext.parse(path)
    except JSONPathError:
        return None


def evaluate_jsonpath(obj: Any, path: str) -> Any:
    """A printer column's value: the one match, a list of several, or None (no match, or a bad path)."""
    expression = _compile_jsonpath(path)
    nodes = [match.value for match in expression.find(obj)] if expression is not None else []
    return nodes[0] if len(nodes) == 1 else (nodes or None)


def _cell(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return _age(value)
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def _ready_containers(pod: Object) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for status in statuses if status.get('ready'))}/{total}"


def _pod_status(pod: Object) -> Any:
    # As kubectl prints it: a terminated or waiting container's reason wins over the phase.
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
        elif (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
    return reason


def _job_status(job: Object) -> str:
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    return "Complete" if conditions.get("Complete") == "True" else \
        "Failed" if conditions.get("Failed") == "True" else "Running"


# Built-in kinds: (column name, type, getter) in the order kubectl shows them.
_BUILTIN: dict[tuple[str, str], list[tuple[str, str, Callable[[Object], Any]]]] = {
    ("", "pods"): [
        ("Ready", "string", _ready_containers),
        ("Status", "string", _pod_status),
        ("Restarts", "integer", lambda pod: sum(s.get("restartCount", 0) for s in
                                                 (pod.get("status") or {}).get("containerStatuses") or [])),
    ],
    ("batch", "jobs"): [
        ("Status", "string", _job_status),
        ("Completions", "string", lambda job: f"{(job.get('status') or {}).get('succeeded', 0)}"
                                              f"/{(job.get('spec') or {}).get('completions', 1)}"),
    ],
    ("apps", "deployments"): [
        ("Ready", "string", lambda d: f"{(d.get('status') or {}).get('readyReplicas', 0)}"
                                      f"/{(d.get('spec') or {}).get('replicas', 1)}"),
        ("Up-to-date", "integer", lambda d: (d.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda d: (d.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("", "namespaces"): [("Status", "string", lambda ns: (ns.get("status") or {}).get("phase"))],
    ("", "events"): [
        ("Type", "string", lambda ev: ev.get("type")),
        ("Reason", "string", lambda ev: ev.get("reason")),
        ("Object", "string", lambda ev: f"{(ev.get('involvedObject') or {}).get('kind', '').lower()}/"
                                        f"{(ev.get('involvedObject') or {}).get('name', '')}"),
        ("Message", "string", lambda ev: ev.get("message")),
    ],
}


def _printer_column_getter(spec: Mapping[str, Any]) -> Callable[[Object], Any]:
    def getter(obj: Object) -> Any:
        return _cell(evaluate_jsonpath(obj, spec.get("jsonPath", "")), spec.get("type", "string"))
    return getter


def _columns(resource: ApiResource) -> list[tuple[Mapping[str, Any], Callable[[Object], Any]]]:
    name_column = {"name": "Name", "type": "string", "format": "name", "priority": 0,
                   "description": "Name must be unique within a namespace."}
    age_column = {"name": "Age", "type": "string", "format": "", "priority": 0,
                  "description": "The time since the object was created."}
    columns: list[tuple[Mapping[str, Any], Callable[[Object], Any]]] = [
        (name_column, lambda obj: (obj.get("metadata") or {}).get("name")),
    ]
    if resource.printer_columns:
        for spec in resource.printer_columns:
            definition = {"name": spec.get("name", ""), "type": spec.get("type", "string"),
                          "format": spec.get("format", ""), "description": spec.get("description", ""),
                          "priority": spec.get("priority", 0)}
            columns.append((definition, _printer_column_getter(spec)))
        return columns
    for name, column_type, getter in _BUILTIN.get(resource.storage, []):
        definition = {"name": name, "type": column_type, "format": "", "description": name, "priority": 0}
        columns.append((definition, getter))
    columns.append((age_column, lambda obj: _age((obj.get("metadata") or {}).get("creationTimestamp"))))
    return columns


def render_table(resource: ApiResource, objects: Sequence[Object], *,
                 include_object: str | None, resource_version: str) -> dict[str, Any]:
    columns = _columns(resource)
    rows: list[dict[str, Any]] = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [getter(obj) for _, getter in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata") or {}}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [definition for definition, _ in columns],
        "rows": rows,
    }
