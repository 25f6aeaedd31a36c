"""The patch formats, as pure functions."""
from typing import Any

import pytest

from modelrelease_local.patching import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)


@pytest.mark.parametrize('target, patch, expected', [
    ({'a': 1, 'b': {'c': 2, 'd': 3}}, {'b': {'c': None, 'e': 4}}, {'a': 1, 'b': {'d': 3, 'e': 4}}),
    ({'a': [1, 2]}, {'a': [3]}, {'a': [3]}),
    ({'a': {'b': 1}}, {'a': 'scalar'}, {'a': 'scalar'}),
    ({'a': 1}, {'b': {'c': None}}, {'a': 1, 'b': {}}),
    ({'a': 1}, {}, {'a': 1}),
])
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    assert apply_merge_patch(target, patch) == expected


def test_merge_patch_does_not_modify_its_arguments() -> None:
    target, patch = {'a': {'b': [1]}}, {'a': {'c': {'d': 1}}}
    result = apply_merge_patch(target, patch)
    result['a']['b'].append(2)
    result['a']['c']['d'] = 2
    assert target == {'a': {'b': [1]}} and patch == {'a': {'c': {'d': 1}}}


def test_json_patch_operations() -> None:
    doc = {'metadata': {'labels': {'a/b': 'x'}}, 'items': [1, 2, 3]}
    result = apply_json_patch(doc, [
        {'op': 'test', 'path': '/metadata/labels/a~1b', 'value': 'x'},
        {'op': 'add', 'path': '/items/-', 'value': 4},
        {'op': 'add', 'path': '/items/0', 'value': 0},
        {'op': 'remove', 'path': '/items/1'},
        {'op': 'replace', 'path': '/metadata/labels/a~1b', 'value': 'y'},
        {'op': 'copy', 'from': '/items', 'path': '/copied'},
        {'op': 'move', 'from': '/copied', 'path': '/moved'},
    ])
    assert result == {'metadata': {'labels': {'a/b': 'y'}}, 'items': [0, 2, 3, 4], 'moved': [0, 2, 3, 4]}
    assert doc['items'] == [1, 2, 3]


@pytest.mark.parametrize('operations', [
    [{'op': 'test', 'path': '/a', 'value': 2}],
    [{'op': 'remove', 'path': '/missing'}],
    [{'op': 'replace', 'path': '/missing/deeper', 'value': 1}],
    [{'op': 'add', 'path': '/list/9', 'value': 1}],
    [{'op': 'unknown', 'path': '/a'}],
    [{'path': '/a'}],
    {'op': 'add', 'path': '/a', 'value': 1},
])
def test_json_patch_failures(operations: Any) -> None:
    with pytest.raises(PatchError):
        apply_json_patch({'a': 1, 'list': []}, operations)


def test_strategic_merge_by_keys_and_directives() -> None:
    target = {'spec': {
        'containers': [{'name': 'a', 'image': 'a:1', 'env': [{'name': 'X', 'value': '1'}]},
                       {'name': 'b', 'image': 'b:1'}],
        'tolerations': [{'key': 'old'}],
        'nodeSelector': {'zone': 'x', 'disk': 'ssd'},
    }, 'metadata': {'finalizers': ['f1'], 'labels': {'keep': 'yes'}}}
    patch = {'spec': {
        'containers': [{'name': 'a', 'env': [{'name': 'Y', 'value': '2'}]},
                       {'name': 'b', '$patch': 'delete'},
                       {'name': 'c', 'image': 'c:1'}],
        '$setElementOrder/containers': [{'name': 'c'}, {'name': 'a'}],
        'tolerations': [{'key': 'new'}],
        'nodeSelector': {'$patch': 'replace', 'zone': 'y'},
    }, 'metadata': {'finalizers': ['f2', 'f1'], '$deleteFromPrimitiveList/finalizers': ['f1']}}
    result = apply_strategic_merge_patch(target, patch)
    assert result == {'spec': {
        'containers': [{'name': 'c', 'image': 'c:1'},
                       {'name': 'a', 'image': 'a:1',
                        'env': [{'name': 'X', 'value': '1'}, {'name': 'Y', 'value': '2'}]}],
        'tolerations': [{'key': 'new'}],
        'nodeSelector': {'zone': 'y'},
    }, 'metadata': {'finalizers': ['f2'], 'labels': {'keep': 'yes'}}}


def test_strategic_list_replacement_and_retain_keys() -> None:
    target = {'conditions': [{'type': 'A', 'status': 'True'}],
              'strategy': {'type': 'RollingUpdate', 'rollingUpdate': {}}}
    patch = {'conditions': [{'$patch': 'replace'}, {'type': 'B', 'status': 'False'}],
             'strategy': {'$retainKeys': ['type'], 'type': 'Recreate'}}
    assert apply_strategic_merge_patch(target, patch) == {
        'conditions': [{'type': 'B', 'status': 'False'}], 'strategy': {'type': 'Recreate'}}
