"""
The real kubectl against the embedded API server's schemas: `kubectl explain` reads the CRD's schema
from OpenAPI v3, and `kubectl apply` (strict by default) has the server refuse a manifest's typo.
"""
import pathlib
from typing import Any

import pytest
import yaml

from modelrelease.api.crd import build_crd
from tests.local.conftest import Kubectl


@pytest.fixture
def crd_applied(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    crd_file = tmp_path / 'crd.yaml'
    crd_file.write_text(yaml.safe_dump(build_crd()))
    kubectl('apply', '-f', str(crd_file))
    kubectl('wait', '--for=condition=Established', 'crd/modelreleases.modelrelease.io', '--timeout=30s')
    # The CRD apply cached discovery from before the kind existed; short names resolve from a fresh one.
    kubectl('api-resources', '--api-group=modelrelease.io')


def _manifest(tmp_path: pathlib.Path, step: dict[str, Any]) -> pathlib.Path:
    """A release of one stage that goes straight to all traffic (so that it needs no analysis)."""
    path = tmp_path / 'release.yaml'
    path.write_text(yaml.safe_dump({
        'apiVersion': 'modelrelease.io/v1alpha1', 'kind': 'ModelRelease',
        'metadata': {'name': 'r1', 'namespace': 'default'},
        'spec': {'model': {'name': 'digits', 'storage': {'pvc': {'claimName': 'models'}}},
                 'stages': [{'name': 'warmup', 'training': {'data': 'sklearn:digits'}, 'steps': [step]}]},
    }))
    return path


def _crd_description(*path: str) -> str:
    node = build_crd()['spec']['versions'][0]['schema']['openAPIV3Schema']
    for name in path:
        node = node['properties'][name]
        node = node.get('items', node) if name != path[-1] else node
    return str(node['description'])


def test_explain_prints_the_fields_and_their_descriptions(kubectl: Kubectl, crd_applied: None) -> None:
    """`kubectl explain` reads a custom kind's schema from the server's OpenAPI v3 document
    (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#publish-validation-schema-in-openapi)."""
    explained = kubectl('explain', 'modelreleases.spec').stdout
    assert 'KIND:       ModelRelease' in explained and 'VERSION:    v1alpha1' in explained
    assert 'stages\t<[]Object> -required-' in explained and 'model\t<Object> -required-' in explained
    first_words = ' '.join(_crd_description('spec', 'stages').split()[:6])
    assert first_words in ' '.join(explained.split())

    stages = kubectl('explain', 'modelreleases.spec.stages').stdout
    assert 'steps\t<[]Object> -required-' in stages and 'training\t<Object>' in stages


def test_explain_recursive_walks_the_schema_and_the_metadata(kubectl: Kubectl, crd_applied: None) -> None:
    """`kubectl explain --recursive` lists every field, metadata's through ObjectMeta's schema
    (https://kubernetes.io/docs/reference/kubectl/generated/kubectl_explain/)."""
    listed = kubectl('explain', 'mrel', '--recursive').stdout
    assert 'metadata\t<ObjectMeta>' in listed
    for field in ('labels\t<map[string]string>', 'canaryWeight\t<integer>', 'weight\t<integer> -required-',
                  'mixedPrecision\t<string>'):
        assert field in listed


def test_apply_refuses_a_typo_naming_the_field(kubectl: Kubectl, crd_applied: None, tmp_path: pathlib.Path) -> None:
    """kubectl's default --validate=strict sends fieldValidation=Strict, so the server refuses unknown fields,
    on create and on a later apply's patch alike
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    manifest = _manifest(tmp_path, {'weight': 100, 'durration': '1m'})
    refused = kubectl('apply', '-f', str(manifest), check=False)
    assert refused.returncode != 0
    assert ('ModelRelease in version "v1alpha1" cannot be handled as a ModelRelease: strict decoding error:'
            ' unknown field "spec.stages[0].steps[0].durration"') in refused.stderr
    assert 'NotFound' in kubectl('get', 'mrel', 'r1', check=False).stderr

    kubectl('apply', '-f', str(_manifest(tmp_path, {'weight': 100})))
    patched = kubectl('apply', '-f', str(_manifest(tmp_path, {'weight': 100, 'durration': '1m'})), check=False)
    assert patched.returncode != 0
    assert 'strict decoding error: unknown field "spec.stages[0].steps[0].durration"' in patched.stderr


def test_apply_without_validation_stores_the_manifest_pruned(kubectl: Kubectl, crd_applied: None,
                                                             tmp_path: pathlib.Path) -> None:
    """--validate=false sends fieldValidation=Ignore: the object is stored with the unknown field pruned
    (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#field-pruning)."""
    applied = kubectl('apply', '--validate=false', '-f', str(_manifest(tmp_path, {'weight': 100, 'durration': '1m'})))
    assert 'modelrelease.modelrelease.io/r1 created' in applied.stdout and 'Warning' not in applied.stderr
    stored = yaml.safe_load(kubectl('get', 'mrel', 'r1', '-o', 'yaml').stdout)
    assert stored['spec']['stages'][0]['steps'] == [{'weight': 100}]


def test_kubectl_prints_the_servers_warnings(kubectl: Kubectl, crd_applied: None, tmp_path: pathlib.Path) -> None:
    """--validate=warn sends fieldValidation=Warn: the server's Warning headers reach the user
    (https://kubernetes.io/blog/2020/09/03/warnings/)."""
    applied = kubectl('apply', '--validate=warn', '-f', str(_manifest(tmp_path, {'weight': 100, 'durration': '1m'})))
    assert 'Warning: unknown field "spec.stages[0].steps[0].durration"' in applied.stderr
