"""
The CRD's CEL rules (``x-kubernetes-validations``) and the operator's own validation decide alike.

Each rule is evaluated as the API server evaluates it (``self`` is the value at the rule's node, one
run per list item; https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules)
by the embedded API server's evaluator, on a spec that keeps the rule and one that breaks only it;
``parse_spec`` must accept and refuse the same two. The server also refuses a CRD whose rules'
estimated cost is over budget unless the lists and strings they iterate are bounded: those bounds
are checked here too.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelrelease.api import InvalidSpecError, parse_spec
from modelrelease.api.cel_rules import RULES
from modelrelease.api.crd import build_crd
from modelrelease_local import cel

Spec = dict[str, Any]
SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def base_spec() -> Spec:
    """A valid spec that touches every rule: a trained and a prebuilt stage, gates, both check kinds."""
    return {
        "model": {"name": "digits", "storage": {"hostPath": {"path": "/var/models"}}},
        "stages": [
            {"name": "warmup", "training": {"data": "sklearn:digits"},
             "gates": [{"metric": "accuracy", "min": 0.5, "max": 1}],
             "steps": [{"weight": 10}, {"weight": 50}]},
            {"name": "full", "modelUri": "/var/models/baseline", "steps": [{"weight": 100}]},
        ],
        "analysis": {
            "prometheus": {"url": "http://prometheus:9090"},
            "checks": [
                {"name": "errors", "preset": "error-rate"},
                {"name": "latency", "query": 'latency{model="{{ model }}", track="{{ track }}"}', "max": 0.5},
            ],
        },
    }


def release(spec: Spec) -> dict[str, Any]:
    return {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
            "metadata": {"name": "r1", "namespace": "default"}, "spec": spec}


@dataclasses.dataclass(frozen=True)
class Case:
    path: str  # the rule's key in RULES
    message: str  # the rule's message (identifies it among the node's rules)
    field: str  # where the API server reports it
    valid: Callable[[Spec], None]  # a change that keeps the rule (near its boundary)
    invalid: Callable[[Spec], None]  # a change that breaks this rule only
    operator_says: str  # a fragment of parse_spec's problem for the same spec

    @property
    def id(self) -> str:
        return f"{self.path or 'spec'}: {self.message[:40]}"


def rule_message(path: str, fragment: str) -> str:
    found = [rule.message for rule in RULES[path] if fragment in rule.message]
    assert len(found) == 1, f"{fragment!r} names {len(found)} rules at {path!r}"
    return found[0]


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    """A change of one field; path like 'stages.0.steps' (list indexes as numbers)."""
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return change


def _all(*changes: Callable[[Spec], None]) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        for one in changes:
            one(spec)
    return change


_DELETE = object()
_FULL_WEIGHT_ONLY = _all(_set("stages.0.steps", [{"weight": 100}]))
_QUERY = 'latency{model="{{ model }}"}'

CASES = [
    Case("", "analysis.checks are required", "spec.analysis.checks",
         _all(_FULL_WEIGHT_ONLY, _set("analysis", {})), _set("analysis", {}),
         "analysis.checks are required when a step has a weight below 100"),
    Case("", "serving.replicas must be at least 2", "spec.serving.replicas",
         _all(_set("stages.0.steps", [{"weight": 0}, {"weight": 100}]), _set("serving", {"replicas": 1})),
         _set("serving", {"replicas": 1}), "serving.replicas must be at least 2"),
    Case("model.name", "model.name must be", "spec.model.name",
         _set("model.name", "digits-2"), _set("model.name", 'x"} or vector(1) #'),
         "must be lower-case letters, digits and '-'"),
    Case("model.storage", "exactly one of pvc or hostPath", "spec.model.storage",
         _set("model.storage", {"pvc": {"claimName": "models"}}),
         _set("model.storage.pvc", {"claimName": "models"}), "set exactly one of pvc or hostPath"),
    Case("model.storage", "mountPath must be an absolute path", "spec.model.storage.mountPath",
         _set("model.storage.mountPath", "/data"), _set("model.storage.mountPath", "data"),
         "mountPath must be an absolute path"),
    Case("stages", "stage names must be unique", "spec.stages",
         _set("stages.1.name", "warmup-2"), _set("stages.1.name", "warmup"), "stage names must be unique"),
    Case("stages", "the last stage must end at weight 100", "spec.stages",
         _set("stages.1.steps", [{"weight": 50}, {"weight": 100}]), _set("stages.1.steps", [{"weight": 50}]),
         "the last stage must end at weight 100"),
    Case("stages[]", "exactly one of training or modelUri", "spec.stages[1]",
         _set("stages.1", {"name": "full", "training": {"data": "d.npz"}, "steps": [{"weight": 100}]}),
         _set("stages.1.training", {"data": "d.npz"}), "set exactly one of training or modelUri"),
    Case("stages[]", "gates need the metrics", "spec.stages[1].gates",
         _set("stages.1.gates", []), _set("stages.1.gates", [{"metric": "accuracy", "min": 0.5}]),
         "gates need the metrics of a training run"),
    Case("stages[]", "weights may only grow", "spec.stages[0].steps",
         _set("stages.0.steps", [{"weight": 10}, {"weight": 10}]),
         _set("stages.0.steps", [{"weight": 50}, {"weight": 10}]), "weights may only grow within a stage"),
    Case("stages[].name", "a stage name must be", "spec.stages[0].name",
         _set("stages.0.name", "warm-up"), _set("stages.0.name", "Warm_up"),
         "must be lower-case letters, digits and '-'"),
    Case("stages[].gates[]", "a gate needs", "spec.stages[0].gates[0]",
         _set("stages.0.gates.0", {"metric": "accuracy", "maxDrop": 0.1}),
         _set("stages.0.gates.0", {"metric": "accuracy"}), "a gate needs min, max, maxDrop or maxRelativeDrop"),
    # An integer in a number field is a double to CEL: 1 > 0.5 compares as numbers.
    Case("stages[].gates[]", "min is above max", "spec.stages[0].gates[0].min",
         _set("stages.0.gates.0", {"metric": "loss", "min": 1, "max": 1.0}),
         _set("stages.0.gates.0", {"metric": "loss", "min": 1, "max": 0.5}), "is above max"),
    Case("analysis", "checks need prometheus.url", "spec.analysis.prometheus",
         _set("analysis.prometheus", {"url": "https://prometheus:9090"}), _set("analysis.prometheus", _DELETE),
         "checks need prometheus.url"),
    Case("analysis.prometheus", "bearerTokenSecretRef or basicAuth", "spec.analysis.prometheus",
         _set("analysis.prometheus.basicAuth", {"secretName": "prom"}),
         _all(_set("analysis.prometheus.basicAuth", {"secretName": "prom"}),
              _set("analysis.prometheus.bearerTokenSecretRef", {"name": "prom", "key": "token"})),
         "set bearerTokenSecretRef or basicAuth, not both"),
    Case("analysis.prometheus", "insecureSkipVerify would ignore", "spec.analysis.prometheus",
         _all(_set("analysis.prometheus.insecureSkipVerify", False),
              _set("analysis.prometheus.caSecretRef", {"name": "ca", "key": "ca.crt"})),
         _all(_set("analysis.prometheus.insecureSkipVerify", True),
              _set("analysis.prometheus.caSecretRef", {"name": "ca", "key": "ca.crt"})),
         "insecureSkipVerify would ignore caSecretRef"),
    Case("analysis.checks", "check names must be unique", "spec.analysis.checks",
         _set("analysis.checks.1.name", "latency-2"), _set("analysis.checks.1.name", "errors"),
         "check names must be unique"),
    Case("analysis.checks[]", "exactly one of preset or query", "spec.analysis.checks[0]",
         _set("analysis.checks.0", {"name": "errors", "query": _QUERY, "max": 1}),
         _set("analysis.checks.0.query", _QUERY), "set exactly one of preset or query"),
    Case("analysis.checks[]", "unknown preset", "spec.analysis.checks[0].preset",
         _set("analysis.checks.0.preset", "latency-p99"), _set("analysis.checks.0.preset", "error-rates"),
         "unknown preset 'error-rates'"),
    Case("analysis.checks[]", "a check needs", "spec.analysis.checks[1]",
         _set("analysis.checks.1", {"name": "latency", "query": _QUERY, "maxRatio": 1.2}),
         _set("analysis.checks.1", {"name": "latency", "query": _QUERY}),
         "a check needs min, max, minRatio, maxRatio or compare"),
    Case("analysis.checks[]", "min is above max", "spec.analysis.checks[1].min",
         _set("analysis.checks.1.min", 0.5), _set("analysis.checks.1.min", 0.75), "min (0.75) is above max (0.5)"),
    Case("analysis.checks[]", "minRatio is above maxRatio", "spec.analysis.checks[1].minRatio",
         _set("analysis.checks.1", {"name": "latency", "query": _QUERY, "minRatio": 0.9, "maxRatio": 0.9}),
         _set("analysis.checks.1", {"name": "latency", "query": _QUERY, "minRatio": 1.1, "maxRatio": 0.9}),
         "minRatio (1.1) is above maxRatio (0.9)"),
    Case("analysis.checks[].name", "a check name must be", "spec.analysis.checks[0].name",
         _set("analysis.checks.0.name", "error-rate-2"), _set("analysis.checks.0.name", "-errors"),
         "must be lower-case letters, digits and '-'"),
]


def spec_with(change: Callable[[Spec], None]) -> Spec:
    spec = copy.deepcopy(base_spec())
    change(spec)
    return spec


def test_the_base_spec_is_valid_to_both():
    parse_spec(base_spec())
    assert cel.violations(SCHEMA, release(base_spec())) == []


def test_every_rule_has_a_case():
    declared = {(path, rule.message) for path, rules in RULES.items() for rule in rules}
    covered = {(case.path, rule_message(case.path, case.message)) for case in CASES}
    assert declared == covered, f"rules without a case: {sorted(declared - covered)}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_rule_accepts_what_the_operator_accepts(case: Case):
    spec = spec_with(case.valid)
    parse_spec(spec)
    assert cel.violations(SCHEMA, release(spec)) == []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_rule_refuses_what_the_operator_refuses(case: Case):
    spec = spec_with(case.invalid)
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(spec)
    assert any(case.operator_says in problem for problem in refused.value.problems), refused.value.problems
    found = cel.violations(SCHEMA, release(spec))
    assert [str(problem) for problem in found] == [
        f'{case.field}: Invalid value: "{type_at(case.path)}": {rule_message(case.path, case.message)}']
    assert found[0].reason == "FieldValueInvalid"


def type_at(path: str) -> str:
    node: dict[str, Any] = SCHEMA["properties"]["spec"]
    for part in path.split(".") if path else []:
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return str(node["type"])


def _with_rules(node: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    if node.get("x-kubernetes-validations"):
        yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _with_rules(child, f"{path}.{key}")
    for keyword in ("items", "additionalProperties"):
        if isinstance(node.get(keyword), dict):
            yield from _with_rules(node[keyword], f"{path}[]")


def test_every_rule_in_the_crd_compiles_and_every_declared_rule_is_in_it():
    assert cel.compile_errors(SCHEMA) == []
    in_crd = [rule for _, node in _with_rules(SCHEMA) for rule in node["x-kubernetes-validations"]]
    assert len(in_crd) == sum(len(rules) for rules in RULES.values())
    assert all(rule["message"] and rule["rule"] for rule in in_crd)


def _iterated_names(rule: str) -> set[str]:
    """The fields a rule reads beyond has() and size(), which cost the same whatever the value's size."""
    return set(re.findall(r"\.([A-Za-z_]\w*)", re.sub(r"\b(?:has|size)\([^()]*\)", "", rule)))


def _reached(node: dict[str, Any], names: set[str], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        if key in names:
            yield from _reached(child, names, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _reached(node["items"], names, f"{path}[]")


def test_every_list_and_string_a_rule_reads_is_bounded():
    unbounded = set()
    for path, node in _with_rules(SCHEMA):
        for declaration in node["x-kubernetes-validations"]:
            for where, reached in _reached(node, _iterated_names(declaration["rule"]), path):
                if reached.get("type") == "array" and "maxItems" not in reached:
                    unbounded.add(f"{where} (maxItems)")
                if reached.get("type") == "string" and "maxLength" not in reached and "enum" not in reached:
                    unbounded.add(f"{where} (maxLength)")
    assert not unbounded, f"give these a bound with Field(max_length=...) in api/spec.py: {sorted(unbounded)}"


def test_the_bounds_in_the_schema_are_the_models_bounds():
    spec = base_spec()
    spec["stages"][0]["steps"] = [{"weight": 10}] * 20 + [{"weight": 100}]
    with pytest.raises(InvalidSpecError, match=r"spec.stages\[0\].steps: List should have at most 20 items"):
        parse_spec(spec)
    schema_spec = SCHEMA["properties"]["spec"]["properties"]
    assert schema_spec["stages"]["items"]["properties"]["steps"]["maxItems"] == 20
    assert schema_spec["analysis"]["properties"]["checks"]["maxItems"] == 20
    assert schema_spec["model"]["properties"]["name"]["maxLength"] == 40
