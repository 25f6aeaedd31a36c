"""Selectors, printer columns' JSONPath and the protobuf decoding, as pure functions."""
import pytest

from modelrelease_local.protobuf import ProtobufError, decode_object
from modelrelease_local.selectors import FieldSelector, LabelSelector, SelectorError
from modelrelease_local.tables import evaluate_jsonpath

OBJ = {'metadata': {'name': 'n', 'namespace': 'ns', 'labels': {'app': 'a', 'app.kubernetes.io/part-of': 'x', 'n': '5'}},
       'status': {'phase': 'Running', 'ready': True,
                  'conditions': [{'type': 'Ready', 'status': 'True'}, {'type': 'Synced', 'status': 'False'}]}}


@pytest.mark.parametrize('text, matches', [
    ('', True), ('app=a', True), ('app==b', False), ('app!=b', True), ('missing!=b', True),
    ('app in (a, b)', True), ('app notin (a)', False), ('app.kubernetes.io/part-of=x', True),
    ('app', True), ('!app', False), ('!missing', True), ('n>4', True), ('n<5', False),
    ('app=a,app.kubernetes.io/part-of in (x,y),!missing', True), ('app=a,missing', False),
])
def test_label_selectors(text: str, matches: bool) -> None:
    assert LabelSelector.parse(text).matches(OBJ) is matches


@pytest.mark.parametrize('text', ['app in (a', '=x', 'n>notanumber', 'a b c'])
def test_bad_label_selectors(text: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(text)


@pytest.mark.parametrize('text, matches', [
    ('metadata.name=n', True), ('metadata.name==m', False), ('metadata.namespace!=other', True),
    ('status.phase=Running,metadata.name=n', True), ('status.ready=true', True), ('spec.nodeName=', True),
])
def test_field_selectors(text: str, matches: bool) -> None:
    assert FieldSelector.parse(text).matches(OBJ) is matches


@pytest.mark.parametrize('path, value', [
    ('.status.phase', 'Running'), ('{.metadata.name}', 'n'), ('.status.conditions[1].type', 'Synced'),
    ('.status.conditions[?(@.type=="Ready")].status', 'True'), ('.spec.missing', None),
    ('.status.conditions[7]', None),
])
def test_printer_column_jsonpath(path: str, value: object) -> None:
    assert evaluate_jsonpath(OBJ, path) == value


def test_protobuf_configmap() -> None:
    # As kubectl sends `kubectl create configmap cm1 --from-literal=a=1`.
    body = (b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1d\n\x13\n\x03cm1\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'
            b'\x12\x06\n\x01a\x12\x011\x1a\x00"\x00')
    assert decode_object(body) == {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'cm1'},
                                   'data': {'a': '1'}}


def test_protobuf_of_other_kinds_is_refused() -> None:
    with pytest.raises(ProtobufError):
        decode_object(b'k8s\x00\n\x15\n\x07apps/v1\x12\nDeployment\x12\x00')
    with pytest.raises(ProtobufError):
        decode_object(b'{"kind": "ConfigMap"}')
