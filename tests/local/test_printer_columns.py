"""Printer columns' Kubernetes JSONPath, as jsonpath-ng evaluates it after the `$` is added."""
from __future__ import annotations

import pytest

from modelrelease_local.tables import evaluate_jsonpath

OBJ = {
    "metadata": {"name": "r", "labels": {"app.kubernetes.io/part-of": "x"}},
    "spec": {"stages": [{"name": "train"}, {"name": "canary"}]},
    "status": {"phase": "Progressing", "canaryWeight": 0, "stable": {"name": "v1"}},
}


@pytest.mark.parametrize("path, value", [
    (".spec.stages[0].name", "train"),
    ("{ .spec.stages[1].name }", "canary"),
    (".spec.stages[*].name", ["train", "canary"]),
    (".metadata.labels['app.kubernetes.io/part-of']", "x"),
    (".status.canaryWeight", 0),
    ("$.status.stable.name", "v1"),
    ("status.phase", "Progressing"),
    ("", OBJ),
    (".status.canary.name", None),
    (".spec.stages[", None),
])
def test_kubernetes_jsonpath(path: str, value: object) -> None:
    assert evaluate_jsonpath(OBJ, path) == value
