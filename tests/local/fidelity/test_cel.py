"""
The CRDs' ``x-kubernetes-validations`` (CEL) rules, enforced by the embedded API server as
kube-apiserver 1.32 enforces them
(https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules):
a broken rule is a 422 ``Invalid`` with the rule's message at the rule's field (or its
``fieldPath``), every violation reported at once; a rule that fails to evaluate reports the error;
a schema type error keeps the rules from running; transition rules compare with ``oldSelf``; values
an update leaves as they were are not checked again (ratcheting). Over HTTP with the kubernetes
client and the real kubectl, against the real ModelRelease CRD and a small CRD for what the
ModelRelease CRD does not use.
"""
import copy
import json
import pathlib
import shutil
import subprocess
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelrelease.api.crd import build_crd
from tests.api.test_crd_rules import CASES, Case, base_spec, release, rule_message, spec_with, type_at

ROOT = pathlib.Path(__file__).resolve().parents[3]
GROUP, VERSION, PLURAL = 'modelrelease.io', 'v1alpha1', 'modelreleases'
KUBECTL = shutil.which('kubectl') or '/usr/bin/kubectl'


@pytest.fixture
def extensions(api_client: kubernetes.client.ApiClient) -> kubernetes.client.ApiextensionsV1Api:
    return kubernetes.client.ApiextensionsV1Api(api_client)


@pytest.fixture
def releases(extensions: kubernetes.client.ApiextensionsV1Api) -> None:
    extensions.create_custom_resource_definition(build_crd())


def _refusal(custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, body)
    assert refused.value.status == 422, refused.value.body
    status: dict[str, Any] = json.loads(refused.value.body)
    assert status['reason'] == 'Invalid'
    return status


def _expected(case: Case) -> tuple[str, str]:
    return type_at(case.path), rule_message(case.path, case.message)


@pytest.mark.usefixtures('releases')
def test_each_rule_refuses_its_violation_with_the_field_and_the_message(custom: kubernetes.client.CustomObjectsApi):
    for case in CASES:
        status = _refusal(custom, release(spec_with(case.invalid)))
        kind, message = _expected(case)
        body = f'Invalid value: "{kind}": {message}'
        assert status['message'] == f'ModelRelease.modelrelease.io "r1" is invalid: {case.field}: {body}', case.id
        assert status['details']['causes'] == [{'reason': 'FieldValueInvalid', 'field': case.field, 'message': body}]
        assert status['details']['name'] == 'r1' and status['details']['kind'] == 'ModelRelease'


@pytest.mark.usefixtures('releases')
def test_several_violations_are_reported_together(custom: kubernetes.client.CustomObjectsApi):
    spec = base_spec()
    spec['stages'][1]['name'] = 'warmup'
    spec['stages'][0]['steps'] = [{'weight': 50}, {'weight': 10}]
    status = _refusal(custom, release(spec))
    fields = [cause['field'] for cause in status['details']['causes']]
    assert fields == ['spec.stages', 'spec.stages[0].steps']
    assert status['message'].startswith('ModelRelease.modelrelease.io "r1" is invalid: [spec.stages: Invalid value:')
    assert 'stage names must be unique' in status['message'] and 'weights may only grow' in status['message']


@pytest.mark.usefixtures('releases')
def test_a_valid_spec_and_every_example_are_accepted(custom: kubernetes.client.CustomObjectsApi):
    created = custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, release(base_spec()))
    assert created['spec']['stages'][1]['modelUri'] == '/var/models/baseline'
    examples = [document for path in sorted((ROOT / 'examples').glob('*.yaml'))
                for document in yaml.safe_load_all(path.read_text()) if document.get('kind') == 'ModelRelease']
    assert examples
    for index, document in enumerate(examples):
        document['metadata'] = {'name': f'example-{index}'}
        custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, document)
    # The operator's status writes leave the spec alone, so its rules are not checked again.
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, 'r1',
                                                 {'status': {'phase': 'Pending'}})


@pytest.mark.usefixtures('releases')
def test_an_update_that_breaks_a_rule_is_refused(custom: kubernetes.client.CustomObjectsApi):
    custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, release(base_spec()))
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, 'r1',
                                              {'spec': {'serving': {'replicas': 1}}})
    assert refused.value.status == 422
    assert json.loads(refused.value.body)['details']['causes'] == [{
        'reason': 'FieldValueInvalid', 'field': 'spec.serving.replicas',
        'message': 'Invalid value: "object": serving.replicas must be at least 2 when a step has a weight between '
                   '0 and 100: the canary needs its own pod beside the stable one'}]


@pytest.mark.usefixtures('releases')
def test_a_rule_that_cannot_be_evaluated_reports_the_error_beside_the_schema_problem(
        custom: kubernetes.client.CustomObjectsApi):
    spec = base_spec()
    del spec['stages'][0]['steps']  # required; the rule reading it fails with "no such key"
    causes = _refusal(custom, release(spec))['details']['causes']
    assert {'reason': 'FieldValueRequired', 'field': 'spec.stages[0].steps'} in [
        {key: cause[key] for key in ('reason', 'field')} for cause in causes]
    assert {'reason': 'FieldValueInvalid', 'field': 'spec.stages[0]',
            'message': 'Invalid value: "object": no such key: steps evaluating rule: '
                       'self.steps.map(s, s.weight).isSorted()'} in causes


@pytest.mark.usefixtures('releases')
def test_a_type_error_keeps_the_rules_from_running(custom: kubernetes.client.CustomObjectsApi):
    spec = base_spec()
    spec['stages'][0]['steps'] = [{'weight': 'ten'}]
    spec['stages'][1]['name'] = 'warmup'  # would break the unique-names rule, were the rules run
    causes = _refusal(custom, release(spec))['details']['causes']
    assert causes[-1] == {'reason': 'FieldValueInvalid', 'field': '<nil>', 'message': (
        'Invalid value: "null": some validation rules were not checked because the object was invalid; '
        'correct the existing errors to complete validation')}
    assert not any('unique' in cause['message'] for cause in causes)
    assert any(cause['field'] == 'spec.stages[0].steps[0].weight' for cause in causes)


def test_kubectl_apply_prints_the_rule_message_and_fails(releases: None, kubeconfig: pathlib.Path,
                                                        tmp_path: pathlib.Path):
    bad = release(spec_with(lambda spec: spec['model'].update(name='x"} or vector(1) #')))
    manifest = tmp_path / 'bad.yaml'
    manifest.write_text(yaml.safe_dump(bad))
    result = subprocess.run([KUBECTL, '--kubeconfig', str(kubeconfig), '--cache-dir', str(tmp_path / 'cache'),
                             'apply', '-f', str(manifest)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert 'The ModelRelease "r1" is invalid' in result.stderr
    assert ('spec.model.name: Invalid value: "string": model.name must be lower-case letters, digits and '
            "'-'") in result.stderr


# A small CRD for what the ModelRelease CRD does not use: a transition rule, rules on map values,
# messageExpression and reason, escaped property names, and ratcheting of an unchanged value.
GADGET_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {'spec': {
        'type': 'object',
        'properties': {
            'size': {'type': 'integer'},
            'zone': {'type': 'string', 'maxLength': 20,
                     'x-kubernetes-validations': [{'rule': 'self == oldSelf', 'message': 'zone is immutable'}]},
            'max-load': {'type': 'number'},
            'ports': {'type': 'object', 'additionalProperties': {
                'type': 'integer',
                'x-kubernetes-validations': [{'rule': 'self > 0 && self < 65536',
                                              'messageExpression': "'port ' + string(self) + ' is out of range'"}]}},
        },
        'x-kubernetes-validations': [
            {'rule': "!has(self.max__dash__load) || self.max__dash__load <= 1.0", 'reason': 'FieldValueForbidden',
             'message': 'max-load is a fraction'},
        ],
    }},
}


@pytest.fixture
def gadgets(extensions: kubernetes.client.ApiextensionsV1Api) -> kubernetes.client.ApiextensionsV1Api:
    extensions.create_custom_resource_definition({
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': 'gadgets.test.example.com'},
        'spec': {'group': 'test.example.com', 'scope': 'Namespaced',
                 'names': {'plural': 'gadgets', 'singular': 'gadget', 'kind': 'Gadget'},
                 'versions': [{'name': 'v1', 'served': True, 'storage': True,
                               'schema': {'openAPIV3Schema': copy.deepcopy(GADGET_SCHEMA)}}]},
    })
    return extensions


def _gadget(spec: dict[str, Any]) -> dict[str, Any]:
    return {'apiVersion': 'test.example.com/v1', 'kind': 'Gadget', 'metadata': {'name': 'g1'}, 'spec': spec}


def _gadget_causes(call: Any) -> list[dict[str, Any]]:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 422, refused.value.body
    causes: list[dict[str, Any]] = json.loads(refused.value.body)['details']['causes']
    return causes


@pytest.mark.usefixtures('gadgets')
def test_transition_rules_map_values_message_expressions_and_escaped_names(custom: kubernetes.client.CustomObjectsApi):
    api = ('test.example.com', 'v1', 'default', 'gadgets')
    assert _gadget_causes(lambda: custom.create_namespaced_custom_object(
        *api, _gadget({'ports': {'http': 80, 'bad': 70000}, 'max-load': 2}))) == [
        {'reason': 'FieldValueForbidden', 'field': 'spec', 'message': 'Forbidden: max-load is a fraction'},
        {'reason': 'FieldValueInvalid', 'field': 'spec.ports[bad]',
         'message': 'Invalid value: "integer": port 70000 is out of range'},
    ]
    # A transition rule runs only on an update; on create there is no oldSelf.
    custom.create_namespaced_custom_object(*api, _gadget({'zone': 'eu-1', 'size': 1}))
    assert _gadget_causes(lambda: custom.patch_namespaced_custom_object(
        *api[:3], 'gadgets', 'g1', {'spec': {'zone': 'us-1'}})) == [
        {'reason': 'FieldValueInvalid', 'field': 'spec.zone', 'message': 'Invalid value: "string": zone is immutable'}]
    custom.patch_namespaced_custom_object(*api[:3], 'gadgets', 'g1', {'spec': {'size': 2}})


def _set_gadget_schema(extensions: kubernetes.client.ApiextensionsV1Api, schema: dict[str, Any]) -> None:
    name = 'gadgets.test.example.com'
    crd = json.loads(extensions.read_custom_resource_definition(name, _preload_content=False).data)
    crd['spec']['versions'][0]['schema'] = {'openAPIV3Schema': schema}
    extensions.replace_custom_resource_definition(name, crd)


def test_an_unchanged_value_is_not_checked_again(gadgets: kubernetes.client.ApiextensionsV1Api,
                                                 custom: kubernetes.client.CustomObjectsApi):
    api = ('test.example.com', 'v1', 'default', 'gadgets')
    without_port_rule = copy.deepcopy(GADGET_SCHEMA)
    del without_port_rule['properties']['spec']['properties']['ports']['additionalProperties'][
        'x-kubernetes-validations']
    _set_gadget_schema(gadgets, without_port_rule)
    custom.create_namespaced_custom_object(*api, _gadget({'ports': {'old': 0}, 'size': 1}))
    _set_gadget_schema(gadgets, copy.deepcopy(GADGET_SCHEMA))
    # The value stored before the rule existed stays while updates leave it alone (ratcheting)...
    custom.patch_namespaced_custom_object(*api[:3], 'gadgets', 'g1', {'spec': {'size': 2}})
    # ... and only the values an update changes are checked.
    assert _gadget_causes(lambda: custom.patch_namespaced_custom_object(
        *api[:3], 'gadgets', 'g1', {'spec': {'ports': {'old': 0, 'new': -1}}})) == [
        {'reason': 'FieldValueInvalid', 'field': 'spec.ports[new]',
         'message': 'Invalid value: "integer": port -1 is out of range'}]


def test_a_crd_whose_rule_does_not_compile_is_refused(extensions: kubernetes.client.ApiextensionsV1Api):
    """The API server compiles a CRD's x-kubernetes-validations when the CRD is written and refuses it
    if one fails, naming the rule's place in the schema (CRD validation rules: compilation)."""
    schema = copy.deepcopy(GADGET_SCHEMA)
    schema['properties']['spec']['x-kubernetes-validations'] = [{'rule': 'self.size >', 'message': 'broken'}]
    crd = {
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': 'gadgets.test.example.com'},
        'spec': {'group': 'test.example.com', 'scope': 'Namespaced',
                 'names': {'plural': 'gadgets', 'singular': 'gadget', 'kind': 'Gadget'},
                 'versions': [{'name': 'v1', 'served': True, 'storage': True,
                               'schema': {'openAPIV3Schema': schema}}]},
    }
    with pytest.raises(ApiException) as refused:
        extensions.create_custom_resource_definition(crd)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)['message']
    assert ('spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule'
            in message and 'compilation failed' in message), message
    assert not [c for c in extensions.list_custom_resource_definition().items
                if c.metadata.name == 'gadgets.test.example.com']


@pytest.mark.usefixtures('releases')
def test_numbers_beyond_int64_and_lists_past_their_bound_are_refused_not_crashed(
        custom: kubernetes.client.CustomObjectsApi):
    """Go decodes a JSON integer beyond int64 as a float64, and the server's CEL runs under a cost budget:
    neither an out-of-range number nor a list far past its maxItems makes the API server fail (5xx); the
    schema's errors refuse the write (CRD validation rules: resource constraints)."""
    spec = base_spec()
    spec['training'] = {'backoffLimit': 10**30}
    spec['stages'][0]['steps'] = [{'weight': 2**63}]
    status = _refusal(custom, release(spec))
    assert 'spec.training.backoffLimit: Invalid value: 1000000000000000000000000000000' in status['message']
    assert 'spec.stages[0].steps[0].weight: Invalid value: 9223372036854775808' in status['message']
    many = base_spec()
    many['stages'] = [copy.deepcopy(many['stages'][0]) for _ in range(2000)]
    del many['stages'][7]['name']
    status = _refusal(custom, release(many))
    assert 'spec.stages: Too many: 2000: must have at most 20 items' in status['message'], status['message'][:300]
