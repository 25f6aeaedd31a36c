"""
The CRD's structural schema, enforced by the embedded API server as kube-apiserver 1.32 enforces it:
pruning, defaulting, validation (one 422 naming every field) and the fieldValidation directive.
Requests go over HTTP (requests, the kubernetes client); the CRDs are the real ModelRelease CRD and
a small one with the keywords the ModelRelease CRD does not use.
"""
import copy
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import requests

from modelrelease.api.crd import build_crd
from modelrelease_local.apiserver import EmbeddedApiServer

CRD_DOCS = 'https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/'
RELEASES = '/apis/modelrelease.io/v1alpha1/namespaces/default/modelreleases'
GADGETS = '/apis/test.example.com/v1/namespaces/default/gadgets'

GADGET_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'spec': {
            'type': 'object',
            'properties': {
                'mode': {'type': 'string', 'default': 'auto'},
                'limits': {'type': 'object', 'default': {}, 'properties': {
                    'cpu': {'x-kubernetes-int-or-string': True, 'default': 1},
                }},
                'note': {'type': 'string', 'nullable': True},
                'retries': {'type': 'integer', 'default': 3},
                'ratio': {'type': 'number', 'minimum': 0, 'maximum': 1, 'exclusiveMaximum': True},
                'since': {'type': 'string', 'format': 'date-time'},
                'tags': {'type': 'array', 'maxItems': 2, 'uniqueItems': True, 'items': {'type': 'string'}},
                'labels': {'type': 'object', 'maxProperties': 2, 'additionalProperties': {
                    'type': 'object', 'properties': {'value': {'type': 'string'}},
                }},
                'code': {'type': 'string', 'maxLength': 3},
                'template': {'type': 'object', 'x-kubernetes-embedded-resource': True,
                             'x-kubernetes-preserve-unknown-fields': True},
            },
        },
        'status': {'type': 'object', 'properties': {'ready': {'type': 'boolean'}}},
    },
}


def _crd(name: str, group: str, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': f'{name}.{group}'},
        'spec': {'group': group, 'scope': 'Namespaced',
                 'names': {'plural': name, 'singular': kind.lower(), 'kind': kind},
                 'versions': [{'name': 'v1', 'served': True, 'storage': True,
                               'schema': {'openAPIV3Schema': schema}, 'subresources': {'status': {}}}]},
    }


@pytest.fixture
def crds(api_client: kubernetes.client.ApiClient) -> None:
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(build_crd())
    extensions.create_custom_resource_definition(_crd('gadgets', 'test.example.com', 'Gadget', GADGET_SCHEMA))


@pytest.fixture
def http(server: EmbeddedApiServer, crds: None) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.base_url = server.url  # type: ignore[attr-defined]
        yield session


def _send(http: requests.Session, method: str, path: str, body: Any, *, field_validation: str | None = None,
          content_type: str = 'application/json') -> requests.Response:
    params = {'fieldValidation': field_validation} if field_validation else {}
    return http.request(method, http.base_url + path, json=body, params=params,  # type: ignore[attr-defined]
                        headers={'Content-Type': content_type})


def release(name: str = 'r1', **spec: Any) -> dict[str, Any]:
    """A release the CRD's schema and rules accept: a canary step judged by a check, then all traffic."""
    body: dict[str, Any] = {
        'apiVersion': 'modelrelease.io/v1alpha1', 'kind': 'ModelRelease', 'metadata': {'name': name},
        'spec': {'model': {'name': 'digits', 'storage': {'pvc': {'claimName': 'models'}}},
                 'stages': [{'name': 'warmup', 'training': {'data': 'sklearn:digits'},
                             'steps': [{'weight': 10}, {'weight': 100}]}],
                 'analysis': {'prometheus': {'url': 'http://prometheus:9090'},
                              'checks': [{'name': 'errors', 'preset': 'error-rate'}]}},
    }
    body['spec'].update(spec)
    return body


def gadget(name: str = 'g1', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'test.example.com/v1', 'kind': 'Gadget', 'metadata': {'name': name}, 'spec': spec}


def _causes(response: requests.Response) -> list[tuple[str, str, str]]:
    return [(cause['reason'], cause['field'], cause['message']) for cause in response.json()['details']['causes']]


def _stored(http: requests.Session, path: str) -> dict[str, Any]:
    response = http.get(http.base_url + path)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_wrong_type_in_spec_is_invalid_naming_the_field(http: requests.Session) -> None:
    """Validation: a value of the wrong type is 422 Invalid, FieldValueTypeInvalid at its path
    (CRD_DOCS#validation)."""
    response = _send(http, 'POST', RELEASES, release(stages='x'))
    assert response.status_code == 422
    status = response.json()
    assert status['reason'] == 'Invalid' and status['code'] == 422
    assert status['message'].startswith('ModelRelease.modelrelease.io "r1" is invalid: ')
    assert ('spec.stages: Invalid value: "string": spec.stages in body must be of type array: "string"'
            in status['message'])
    assert status['details']['kind'] == 'ModelRelease' and status['details']['group'] == 'modelrelease.io'
    assert _causes(response)[0] == ('FieldValueTypeInvalid', 'spec.stages',
                                    'Invalid value: "string": spec.stages in body must be of type array: "string"')
    assert http.get(http.base_url + RELEASES + '/r1').status_code == 404  # type: ignore[attr-defined]


def test_a_bound_deep_in_arrays_is_checked_on_update(http: requests.Session) -> None:
    """Validation on update: maximum, reported with the indexed path and the server's words (CRD_DOCS#validation)."""
    assert _send(http, 'POST', RELEASES, release()).status_code == 201
    stored = _stored(http, RELEASES + '/r1')
    stored['spec']['stages'][0]['steps'][1]['weight'] = 250
    response = _send(http, 'PUT', RELEASES + '/r1', stored)
    assert response.status_code == 422
    assert ('ModelRelease.modelrelease.io "r1" is invalid: [spec.stages[0].steps[1].weight: Invalid value: 250:'
            ' spec.stages[0].steps[1].weight in body should be less than or equal to 100') in response.json()['message']
    assert _causes(response)[0] == ('FieldValueInvalid', 'spec.stages[0].steps[1].weight', 'Invalid value: 250:'
                                    ' spec.stages[0].steps[1].weight in body should be less than or equal to 100')
    assert _stored(http, RELEASES + '/r1')['spec']['stages'][0]['steps'][1]['weight'] == 100


def test_a_status_subresource_write_is_validated(http: requests.Session) -> None:
    """Validation covers status writes through the /status subresource (CRD_DOCS#status-subresource)."""
    assert _send(http, 'POST', RELEASES, release()).status_code == 201
    response = _send(http, 'PATCH', RELEASES + '/r1/status', {'status': {'canaryWeight': 'fifty'}},
                     content_type='application/merge-patch+json')
    assert response.status_code == 422
    assert _causes(response)[0] == ('FieldValueTypeInvalid', 'status.canaryWeight', 'Invalid value: "string":'
                                    ' status.canaryWeight in body must be of type integer: "string"')
    assert 'status' not in _stored(http, RELEASES + '/r1')


def test_every_problem_is_one_cause_of_one_answer(http: requests.Session) -> None:
    """Validation: enum, pattern, minLength and required problems come back together, one cause each,
    the message listing them in brackets as errors.NewInvalid does (CRD_DOCS#validation)."""
    body = release(actions={'promote': ''})
    body['spec']['analysis']['prometheus']['url'] = 'ftp://prometheus'
    body['spec']['stages'][0]['training']['mixedPrecision'] = 'sometimes'
    del body['spec']['model']['name']
    response = _send(http, 'POST', RELEASES, body)
    assert response.status_code == 422
    causes = set(_causes(response))
    assert causes >= {
        ('FieldValueRequired', 'spec.model.name', 'Required value'),
        ('FieldValueNotSupported', 'spec.stages[0].training.mixedPrecision',
         'Unsupported value: "sometimes": supported values: "auto", "on", "off"'),
        ('FieldValueInvalid', 'spec.analysis.prometheus.url', 'Invalid value: "ftp://prometheus":'
         " spec.analysis.prometheus.url in body should match '^https?://'"),
        ('FieldValueInvalid', 'spec.actions.promote',
         'Invalid value: "": spec.actions.promote in body should be at least 1 chars long'),
    }
    message = response.json()['message']
    assert message.startswith('ModelRelease.modelrelease.io "r1" is invalid: [') and message.endswith(']')
    assert 'spec.model.name: Required value' in message


@pytest.mark.parametrize(('spec', 'expected'), [
    ({'note': None}, None),  # nullable keeps a null
    ({'limits': {'cpu': '500m'}}, None),  # int-or-string takes either
    ({'limits': {'cpu': 1.5}}, ('FieldValueTypeInvalid', 'spec.limits.cpu',
                                'Invalid value: "number": spec.limits.cpu in body must be of type integer,string:'
                                ' "number"')),
    ({'retries': 2.0}, None),  # an integral float is an integer, as Go's JSON decoding reads it
    ({'ratio': 1}, ('FieldValueInvalid', 'spec.ratio', 'Invalid value: 1: spec.ratio in body should be less than 1')),
    ({'since': '2025-01-02T03:04:05Z'}, None),
    ({'since': 'yesterday'}, ('FieldValueTypeInvalid', 'spec.since',
                              'Invalid value: "yesterday": spec.since in body must be of type date-time: "yesterday"')),
    ({'tags': ['a', 'b', 'c']}, ('FieldValueTooMany', 'spec.tags', 'Too many: 3: must have at most 2 items')),
    ({'tags': ['a', 'a']}, ('FieldValueInvalid', 'spec.tags',
                            'Invalid value: "": spec.tags in body shouldn\'t contain duplicates')),
    ({'labels': {'a': {}, 'b': {}, 'c': {}}}, ('FieldValueTooMany', 'spec.labels',
                                                'Too many: 3: must have at most 2 items')),
    ({'labels': {'a': {'value': 7}}}, ('FieldValueTypeInvalid', 'spec.labels.a.value', 'Invalid value: "integer":'
                                        ' spec.labels.a.value in body must be of type string: "integer"')),
    ({'code': 'abcd'}, ('FieldValueTooLong', 'spec.code', 'Too long: may not be longer than 3')),
    ({'template': {'kind': 'Pod'}}, ('FieldValueRequired', 'spec.template.apiVersion',
                                     'Required value: must not be empty')),
])
def test_openapi_keywords(http: requests.Session, spec: dict[str, Any], expected: tuple[str, str, str] | None) -> None:
    """Validation keywords of OpenAPI v3.0 and the Kubernetes extensions (nullable, x-kubernetes-int-or-string,
    format, exclusiveMaximum, maxItems, uniqueItems, maxProperties, additionalProperties, maxLength,
    x-kubernetes-embedded-resource), each answered as the server does (CRD_DOCS#validation)."""
    response = _send(http, 'POST', GADGETS, gadget(**spec))
    if expected is None:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code == 422, response.text
        assert _causes(response) == [expected]


def test_unknown_fields_are_pruned_except_where_preserved(http: requests.Session) -> None:
    """Pruning: fields the schema does not declare are dropped from spec, from objects inside arrays, from
    metadata and from status, but kept under x-kubernetes-preserve-unknown-fields (CRD_DOCS#field-pruning)."""
    body = release(bogusField=1, serving={'template': {'spec': {'containers': [{'name': 'c', 'extra': True}]}}})
    body['spec']['stages'][0]['steps'][0]['typo'] = 'x'
    body['metadata']['unknownMeta'] = 'x'
    response = _send(http, 'POST', RELEASES, body, field_validation='Ignore')
    assert response.status_code == 201, response.text
    assert 'Warning' not in response.headers
    stored = _stored(http, RELEASES + '/r1')
    assert 'bogusField' not in stored['spec'] and 'unknownMeta' not in stored['metadata']
    assert stored['spec']['stages'][0]['steps'] == [{'weight': 10}, {'weight': 100}]
    assert stored['spec']['serving']['template'] == {'spec': {'containers': [{'name': 'c', 'extra': True}]}}
    patched = _send(http, 'PATCH', RELEASES + '/r1/status',
                    {'status': {'phase': 'Pending', 'notInSchema': 1, 'stages': [{'name': 'warmup', 'odd': 1}]}},
                    content_type='application/merge-patch+json', field_validation='Ignore')
    assert patched.status_code == 200, patched.text
    assert _stored(http, RELEASES + '/r1')['status'] == {'phase': 'Pending', 'stages': [{'name': 'warmup'}]}


def test_defaults_are_applied(http: requests.Session) -> None:
    """Defaulting: absent fields, non-nullable nulls and fields inside a defaulted object get the schema's
    default on write (CRD_DOCS#defaulting)."""
    assert _send(http, 'POST', GADGETS, gadget(retries=None)).status_code == 201
    assert _stored(http, GADGETS + '/g1')['spec'] == {'mode': 'auto', 'limits': {'cpu': 1}, 'retries': 3}
    body = gadget(mode='manual')
    body['metadata']['resourceVersion'] = _stored(http, GADGETS + '/g1')['metadata']['resourceVersion']
    replaced = _send(http, 'PUT', GADGETS + '/g1', body)
    assert replaced.status_code == 200 and replaced.json()['spec'] == {'mode': 'manual', 'limits': {'cpu': 1},
                                                                       'retries': 3}


def test_strict_refuses_unknown_fields_and_stores_nothing(http: requests.Session) -> None:
    """fieldValidation=Strict: 400 BadRequest listing every unknown field, nothing stored
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    body = release(bogusField=1)
    body['spec']['stages'][0]['typo'] = 2
    response = _send(http, 'POST', RELEASES, body, field_validation='Strict')
    assert response.status_code == 400
    assert response.json()['reason'] == 'BadRequest'
    assert response.json()['message'] == (
        'ModelRelease in version "v1alpha1" cannot be handled as a ModelRelease: strict decoding error:'
        ' unknown field "spec.bogusField", unknown field "spec.stages[0].typo"')
    assert http.get(http.base_url + RELEASES + '/r1').status_code == 404  # type: ignore[attr-defined]


def test_strict_refuses_a_patch_that_adds_unknown_fields(http: requests.Session) -> None:
    """fieldValidation=Strict on PATCH: the patched object's unknown fields are a strict decoding error
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    assert _send(http, 'POST', RELEASES, release()).status_code == 201
    response = _send(http, 'PATCH', RELEASES + '/r1', {'spec': {'paused': True, 'pasued': True}},
                     content_type='application/merge-patch+json', field_validation='Strict')
    assert response.status_code == 400
    assert response.json()['message'] == 'strict decoding error: unknown field "spec.pasued"'
    assert 'paused' not in _stored(http, RELEASES + '/r1')['spec']


def test_warn_is_the_default_and_warns_per_field(http: requests.Session) -> None:
    """fieldValidation=Warn (the default): stored pruned, with one `Warning: 299` header per unknown field
    (https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation)."""
    body = release(bogusField=1)
    body['metadata']['extra'] = 'x'
    response = _send(http, 'POST', RELEASES, body)
    assert response.status_code == 201
    assert response.raw.headers.getlist('Warning') == ['299 - "unknown field \\"spec.bogusField\\""',
                                                       '299 - "unknown field \\"metadata.extra\\""']
    assert 'bogusField' not in _stored(http, RELEASES + '/r1')['spec']
    explicit = _send(http, 'PATCH', RELEASES + '/r1', {'spec': {'other': 1}},
                     content_type='application/merge-patch+json', field_validation='Warn')
    assert explicit.status_code == 200
    assert explicit.raw.headers.getlist('Warning') == ['299 - "unknown field \\"spec.other\\""']


def test_an_unknown_directive_is_refused(http: requests.Session) -> None:
    """fieldValidation accepts only Ignore, Warn and Strict: anything else fails the options' validation."""
    response = _send(http, 'POST', RELEASES, release(), field_validation='strict')
    assert response.status_code == 422
    assert response.json()['message'] == ('CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported'
                                          ' value: "strict": supported values: "", "Ignore", "Strict", "Warn"')


def test_updates_may_keep_values_a_tightened_schema_refuses(http: requests.Session,
                                                           api_client: kubernetes.client.ApiClient) -> None:
    """Validation ratcheting (on by default since 1.30): an update may leave a now-invalid value as it was,
    but not write a new invalid one (CRD_DOCS#validation-ratcheting)."""
    assert _send(http, 'POST', GADGETS, gadget(code='abc')).status_code == 201
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    crd = extensions.read_custom_resource_definition('gadgets.test.example.com').to_dict()
    tightened = copy.deepcopy(_crd('gadgets', 'test.example.com', 'Gadget', GADGET_SCHEMA))
    tightened['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['spec']['properties']['code'][
        'maxLength'] = 2
    tightened['metadata']['resourceVersion'] = crd['metadata']['resource_version']
    extensions.replace_custom_resource_definition('gadgets.test.example.com', tightened)

    kept = _send(http, 'PATCH', GADGETS + '/g1', {'spec': {'mode': 'manual'}},
                 content_type='application/merge-patch+json')
    assert kept.status_code == 200, kept.text
    changed = _send(http, 'PATCH', GADGETS + '/g1', {'spec': {'code': 'xyz'}},
                    content_type='application/merge-patch+json')
    assert changed.status_code == 422
    assert _causes(changed) == [('FieldValueTooLong', 'spec.code', 'Too long: may not be longer than 2')]


def test_nan_and_infinity_are_not_json(server: EmbeddedApiServer) -> None:
    """The API server decodes bodies with Go's encoding/json, which has no NaN or Infinity: a body
    carrying them is a 400 BadRequest, nothing stored (RFC 8259 numbers)."""
    body = b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nan"}, "data": {}, "x": NaN}'
    answer = requests.post(f"{server.url}/api/v1/namespaces/default/configmaps", data=body,
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 400 and "invalid character 'N'" in answer.json()["message"]
    assert server.get_object("v1", "configmaps", "default", "nan") is None


def test_a_bad_comparison_is_refused_with_every_field_named(http: requests.Session) -> None:
    """A check's compare: an unknown test and a confidence outside (0, 1) are one 422 naming both fields;
    nothing is stored."""
    checks = [{'name': 'accuracy', 'preset': 'online-accuracy',
               'compare': {'test': 't-test', 'confidence': 1.5, 'direction': 'decrease'}}]
    body = release(analysis={'prometheus': {'url': 'http://prometheus:9090'}, 'checks': checks})
    response = _send(http, 'POST', RELEASES, body)
    assert response.status_code == 422, response.text
    fields = {field for _, field, _ in _causes(response)}
    assert {'spec.analysis.checks[0].compare.test', 'spec.analysis.checks[0].compare.confidence'} <= fields
    assert 'supported values: "mann-whitney", "proportions"' in response.json()['message']
    assert http.get(http.base_url + RELEASES + '/r1').status_code == 404  # type: ignore[attr-defined]
    checks[0]['compare'] = {'test': 'proportions', 'confidence': 0.99, 'direction': 'decrease', 'dryRun': True}
    response = _send(http, 'POST', RELEASES, body, field_validation='Strict')
    assert response.status_code == 400
    assert 'unknown field "spec.analysis.checks[0].compare.dryRun"' in response.json()['message']
    checks[0]['compare'].pop('dryRun')
    checks[0]['dryRun'] = True
    assert _send(http, 'POST', RELEASES, body, field_validation='Strict').status_code == 201
    assert _stored(http, RELEASES + '/r1')['spec']['analysis']['checks'][0]['dryRun'] is True
