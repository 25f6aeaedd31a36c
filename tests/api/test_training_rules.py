"""Training settings no node or worker set could run are refused with the field and the fix."""

from __future__ import annotations

from fractions import Fraction

import pytest

from modelrelease.api import parse_spec
from modelrelease.api.quantity import parse_quantity
from tests.api.test_spec_validation import mutated, problems_of


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Fraction(1, 2)), ("0.5", Fraction(1, 2)), ("2", 2), (3, 3), ("1Ki", 1024), ("8Gi", 8 * 2**30),
    ("1k", 1000), ("1.5G", 1_500_000_000), ("1e3", 1000), ("2E-1", Fraction(1, 5)), (".5", Fraction(1, 2)),
])
def test_quantities_are_read_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.2.3", "5 Gi", "1gi", "one", "1Kb"])
def test_a_malformed_quantity_names_the_forms(text):
    with pytest.raises(ValueError, match="Kubernetes quantity such as 500m"):
        parse_quantity(text)


@pytest.mark.parametrize("text", ["1e10000000", "1E-31", "5e31"])
def test_a_huge_exponent_is_refused_before_any_arithmetic(text):
    with pytest.raises(ValueError, match="exponent beyond 30"):
        parse_quantity(text)


def test_workers_default_to_one_and_a_stage_may_override():
    spec = parse_spec(mutated(lambda raw: raw["stages"][1]["training"].update(workers=4)))
    assert spec.training.workers == 1 and spec.stages[1].training.workers == 4


@pytest.mark.parametrize("workers", [0, 65, -1])
def test_workers_outside_1_to_64_are_refused(workers):
    text = problems_of(mutated(lambda raw: raw.update(training={"workers": workers})))
    assert "spec.training.workers" in text


@pytest.mark.parametrize(("resources", "wanted"), [
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
     "requests.cpu (2) is above limits.cpu (1); a pod may not ask for more than its limit"),
    ({"requests": {"memory": "9Gi"}, "limits": {"memory": "8Gi"}}, "requests.memory (9Gi) is above limits.memory"),
    ({"limits": {"nvidia.com/gpu": "0.5"}}, "limits.nvidia.com/gpu: '0.5' is not a whole number"),
    ({"requests": {"nvidia.com/gpu": 1}}, "requests.nvidia.com/gpu needs limits.nvidia.com/gpu too"),
    ({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}},
     "extended resources cannot be overcommitted"),
    ({"limits": {"memory": "lots"}}, "limits.memory: 'lots' is not a Kubernetes quantity"),
    ({"requests": {"cpu": "-1"}}, "requests.cpu: '-1' is negative"),
])
def test_resources_no_node_could_admit_are_refused(resources, wanted):
    text = problems_of(mutated(lambda raw: raw["stages"][0]["training"].update(resources=resources)))
    assert "spec.stages[0].training.resources" in text and wanted in text


def test_resources_a_node_can_admit_pass():
    ok = {"requests": {"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": 2},
          "limits": {"cpu": "1", "memory": "2048Mi", "nvidia.com/gpu": 2}}
    spec = parse_spec(mutated(lambda raw: raw["stages"][0]["training"].update(resources=ok)))
    assert spec.stages[0].training.resources.limits["nvidia.com/gpu"] == 2


def test_a_batch_smaller_than_the_workers_is_refused():
    def change(raw):
        raw["training"] = {"workers": 8}
        for stage in raw["stages"]:
            stage["training"]["batchSize"] = 64
        raw["stages"][2]["training"]["batchSize"] = 4

    text = problems_of(mutated(change))
    assert "stages[2].training.batchSize (4) is below its workers (8)" in text and "stages[1]" not in text


@pytest.mark.parametrize(("where", "args", "flag"), [
    ("training", ["--epochs", "50"], "--epochs"),
    ("stage", ["--learning-rate=0.1"], "--learning-rate"),
    ("stage", ["--verbose", "--workers", "4"], "--workers"),
])
def test_args_that_repeat_a_managed_flag_are_refused(where, args, flag):
    def change(raw):
        if where == "training":
            raw["training"] = {"args": args}
        else:
            raw["stages"][1]["training"]["args"] = args

    text = problems_of(mutated(change))
    place = "training.args" if where == "training" else "stages[1].training.args"
    assert f"{place}: {flag} is set by the operator from" in text and "set that field instead" in text


def test_args_the_operator_does_not_set_pass():
    spec = parse_spec(mutated(lambda raw: raw.update(training={"args": ["--verbose", "--log-every", "10"]})))
    assert spec.training.args == ["--verbose", "--log-every", "10"]
