"""The patch formats that libraries apply: RFC 7386's own examples and RFC 6902 failures as PatchError."""
from __future__ import annotations

from typing import Any

import pytest

from modelrelease_local.patching import (
    PatchError,
    PatchFormatError,
    PatchType,
    apply_json_patch,
    apply_merge_patch,
    apply_patch,
)

RFC_7386_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target, patch, expected", RFC_7386_APPENDIX_A)
def test_merge_patch_follows_the_rfc_examples(target: Any, patch: Any, expected: Any) -> None:
    assert apply_merge_patch(target, patch) == expected


def test_merge_patch_result_shares_nothing_with_the_patch() -> None:
    patch = {"a": {"list": [1]}, "b": [{"c": 1}]}
    result = apply_merge_patch({}, patch)
    result["a"]["list"].append(2)
    result["b"][0]["c"] = 2
    assert patch == {"a": {"list": [1]}, "b": [{"c": 1}]}


def test_json_patch_result_shares_nothing_with_the_operations() -> None:
    operations = [{"op": "add", "path": "/a", "value": {"b": [1]}}]
    result = apply_json_patch({}, operations)
    result["a"]["b"].append(2)
    assert operations[0]["value"] == {"b": [1]}


@pytest.mark.parametrize("operations", [
    [{"op": "add", "path": "a", "value": 1}],  # a pointer must start with /
    [{"op": "add", "path": "/list/01", "value": 1}],  # no leading zeros in an index
    [{"op": "remove", "path": "/list/-"}],
    [{"op": "remove", "path": ""}],
    [{"op": "add", "path": "/a/b", "value": 1}],  # into a scalar
    [{"op": "move", "path": "/b"}],  # no from
    [{"op": "test", "path": "/missing", "value": 1}],
    [{"op": "test", "path": "/a", "value": True}],  # JSON values: true is not 1
    ["add"],
])
def test_json_patch_failures_are_patch_errors(operations: Any) -> None:
    with pytest.raises(PatchError):
        apply_json_patch({"a": 1, "list": []}, operations)


@pytest.mark.parametrize("patch_type, patch", [
    (PatchType.MERGE, ["not", "an", "object"]),
    (PatchType.STRATEGIC, "scalar"),
    (PatchType.JSON, [{"op": "replace", "path": "", "value": 5}]),
    ("text/plain", {}),
])
def test_wrong_shapes_are_format_errors(patch_type: str, patch: Any) -> None:
    with pytest.raises(PatchFormatError):
        apply_patch(patch_type, {"a": 1}, patch)
