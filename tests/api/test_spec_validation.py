"""Validation errors name the field as the user wrote it and say how to fix it."""

from __future__ import annotations

import contextlib
import copy
import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrelease.api import InvalidSpecError, parse_spec
from tests.core.world import base_spec


def problems_of(raw) -> str:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(raw)
    return "\n".join(caught.value.problems)


def mutated(change) -> dict:
    raw = copy.deepcopy(base_spec())
    change(raw)
    return raw


def test_the_operator_package_does_not_shadow_the_standard_library():
    assert importlib.import_module("operator").__file__.endswith("operator.py")
    assert importlib.import_module("operator").itemgetter


def test_defaults_are_filled_in():
    spec = parse_spec(base_spec())
    assert spec.training.backoff_limit == 2 and spec.training.mixed_precision == "auto"
    assert spec.stages[0].training.optimizer.name == "adam"
    assert spec.revision_history_limit == 10 and spec.paused is False


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["stages"].append(copy.deepcopy(r["stages"][0])), "stage names must be unique; repeated: warmup"),
        (lambda r: r["stages"][1]["steps"].reverse(), "spec.stages[1]: steps[1].weight 10 is below"),
        (lambda r: r["stages"][2]["steps"].pop(), "the last stage must end at weight 100"),
        (lambda r: r["stages"][0].pop("training"), "spec.stages[0]: set exactly one of training or modelUri"),
        (lambda r: r["analysis"].update(checks=[]), "analysis.checks are required"),
        (lambda r: r["stages"][0]["training"].update(optimizer={"name": "rmsprop"}),
         "spec.stages[0].training.optimizer.name: must be one of 'adam', 'adamw' or 'sgd'; got 'rmsprop'"),
        (lambda r: r["stages"][0]["steps"][0].update(duration="5 minutes"),
         "spec.stages[0].steps[0].duration: '5 minutes' is not a duration; write it like 30s, 5m"),
        (lambda r: r["stages"][0]["steps"][0].update(weight=120),
         "spec.stages[0].steps[0].weight: Input should be less than or equal to 100"),
        (lambda r: r["stages"][0]["training"].update(batchsize=3), "spec.stages[0].training.batchsize: is not a field"),
        (lambda r: r["stages"][0].update(name="Warm_Up"), "spec.stages[0].name: 'Warm_Up' must be lower-case"),
        (lambda r: r["serving"].update(replicas=1), "serving.replicas must be at least 2"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "query": 'up{job="{{ jobname }}"}', "max": 1}),
         "unknown variable {{ jobname }}"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "query": "up{job={{ release }}}", "max": 1}),
         "{{ release }} must stand inside double quotes"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "preset": "p95"}), "unknown preset 'p95'"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "query": "up"}), "a check needs min, max"),
        (lambda r: r["stages"][0]["gates"].append({"metric": "auc", "min": 0.5}), "gates[1].metric: must be one of"),
        (lambda r: r["stages"][0]["gates"].append({"metric": "f1"}), "a gate needs min, max, maxDrop"),
        (lambda r: r["model"].update(storage={}), "spec.model.storage: set exactly one of pvc or hostPath"),
        (lambda r: r["analysis"].pop("prometheus"), "checks need prometheus.url"),
    ],
)
def test_invalid_specs_name_the_field_and_the_fix(change, expected):
    assert expected in problems_of(mutated(change))


def test_falling_weights_are_explained():
    text = problems_of(mutated(lambda r: r["stages"][1]["steps"].reverse()))
    assert "steps[1].weight 10 is below steps[0].weight 50; weights may only grow within a stage" in text


def test_every_problem_is_reported_at_once():
    raw = mutated(lambda r: (r["stages"][0]["steps"][0].update(weight=-1), r["serving"].update(port=0)))
    text = problems_of(raw)
    assert "steps[0].weight" in text and "serving.port" in text


def test_a_spec_that_is_not_an_object():
    assert "spec must be an object" in problems_of(["not", "a", "spec"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_garbage_gives_validation_errors_never_another_exception(garbage):
    try:
        parse_spec(garbage)
    except InvalidSpecError as exc:
        assert exc.problems and all(p.startswith("spec") for p in exc.problems)


field_names = st.sampled_from(["model", "stages", "serving", "analysis", "training", "weight", "steps",
                               "name", "data", "replicas", "checks", "paused", "actions"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(field_names, min_size=1, max_size=4), json_values), max_size=4))
def test_corrupted_valid_specs_never_crash(corruptions):
    raw = base_spec()
    for path, value in corruptions:
        node = raw
        for key in path[:-1]:
            child = node.get(key) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                break
            node = child
        if isinstance(node, dict):
            node[path[-1]] = value
    with contextlib.suppress(InvalidSpecError):
        parse_spec(raw)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["analysis"]["prometheus"].update(
            bearerTokenSecretRef={"name": "t", "key": "k"}, basicAuth={"secretName": "b"}),
         "set bearerTokenSecretRef or basicAuth, not both"),
        (lambda r: r["analysis"]["prometheus"].update(
            insecureSkipVerify=True, caSecretRef={"name": "ca", "key": "ca.pem"}), "would ignore caSecretRef"),
        (lambda r: r["analysis"]["prometheus"].update(timeout="0s"), "timeout must be above 0s"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "query": "up", "min": 2, "max": 1}),
         "min (2.0) is above max (1.0)"),
        (lambda r: r["analysis"]["checks"].append({"name": "x", "query": "up", "minRatio": 2, "maxRatio": 1}),
         "minRatio (2.0) is above maxRatio (1.0)"),
        (lambda r: r.update(actions={"abort": ""}), "spec.actions.abort: String should have at least 1 character"),
    ],
)
def test_analysis_and_action_rules(change, expected):
    assert expected in problems_of(mutated(change))
