"""The CRD in crds/ is generated from the models; examples validate against it."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelrelease.api import parse_spec
from modelrelease.api.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modelrelease.io_modelreleases.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_committed_crd_matches_the_models():
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == build_crd(), "crds/ is stale: run `make crds` and commit the result"


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(build_crd(), "1.33", strict=True)


def _walk(node, path="schema"):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node, path
        typed = node.get("type") or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert typed, f"{path} has no type"


def test_spec_fields_carry_descriptions_for_kubectl_explain():
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    stage = spec["properties"]["stages"]["items"]
    assert "previous stage" in stage["properties"]["training"]["properties"]["initFrom"]["description"]
    assert spec["properties"]["revisionHistoryLimit"]["description"]


def test_printer_columns_and_names():
    version = build_crd()["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase", "Stage", "Weight", "Stable", "Canary", "Age"]
    assert version["subresources"] == {"status": {}}
    assert build_crd()["spec"]["names"]["shortNames"] == ["mrel"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema_and_the_models(example):
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for document in yaml.safe_load_all(example.read_text()):
        if document.get("kind") != "ModelRelease":
            continue
        jsonschema.Draft4Validator(schema).validate(document)
        parse_spec(document["spec"])


def test_schema_rejects_what_the_models_reject():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    document = yaml.safe_load(EXAMPLES[0].read_text())
    document["spec"]["stages"][0]["steps"][0]["weight"] = 101
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(document)


def test_the_digits_example_has_the_documented_shape():
    spec = parse_spec(yaml.safe_load((ROOT / "examples" / "digits-release.yaml").read_text())["spec"])
    assert [s.training.data for s in spec.stages] == [
        "sklearn:digits?fraction=0.3", "sklearn:digits?fraction=0.6", "sklearn:digits?fraction=1.0"]
    assert [s.training.optimizer.name for s in spec.stages] == ["adam", "adamw", "adamw"]
    assert [step.weight for s in spec.stages for step in s.steps] == [10, 10, 50, 50, 100]
    assert {c.preset for c in spec.analysis.checks} >= {"error-rate"}
