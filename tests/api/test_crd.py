"""The CRD in crds/ is generated from the models; examples validate against it."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import Field

from modelrelease.api import parse_spec
from modelrelease.api.base import WireModel
from modelrelease.api.crd import build_crd, schema_of

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


def _properties(node, path=""):
    """Every property under node, through nested objects, list items and map values, with its path."""
    for key, child in (node.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        yield here, child
        yield from _properties(child, here)
    if isinstance(node.get("items"), dict):
        yield from _properties(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _properties(node["additionalProperties"], f"{path}{{}}")


# The API server rejects a CRD whose root `metadata` schema carries anything but `type: object` (a
# description included) and shows ObjectMeta's standard description there itself.
LEFT_TO_KUBERNETES = {"metadata"}


def test_every_property_has_a_description_for_kubectl_explain():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [
        path for path, node in _properties(schema)
        if path not in LEFT_TO_KUBERNETES and not str(node.get("description") or "").strip()
    ]
    assert not missing, (
        f"{len(missing)} properties have no description (write a field docstring in api/spec.py or "
        "api/status.py, then `make crds`): " + ", ".join(missing)
    )


def test_root_metadata_is_left_to_kubernetes():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert "APIVersion defines" in schema["properties"]["apiVersion"]["description"]
    assert "Kind is a string value" in schema["properties"]["kind"]["description"]


def test_kubectl_explain_shows_text_for_stages_and_the_canary_weight():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    stages = schema["properties"]["spec"]["properties"]["stages"]
    assert "1 to 20 stages, run in order" in stages["description"]
    assert "at most 30 characters" in stages["items"]["properties"]["name"]["description"]
    weight = schema["properties"]["status"]["properties"]["canaryWeight"]["description"]
    assert weight.startswith("Percent of serving replicas given to the canary, 0 to 100")


def test_descriptions_are_paragraphs_not_source_lines():
    # A docstring's line breaks are only for the source; kubectl explain wraps the text itself.
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    broken = [path for path, node in _properties(schema)
              if "\n" in node.get("description", "").replace("\n\n", "")]
    assert not broken, broken


def test_one_model_is_described_where_it_is_used():
    status = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    described = {name: status["properties"][name]["description"] for name in ("stable", "canary", "history")}
    assert len(set(described.values())) == 3, described
    assert "stable Deployment" in described["stable"] and "canary Deployment" in described["canary"]


class _Inner(WireModel):
    """What the model says of itself."""

    x: int = 0
    """An x."""


class _Outer(WireModel):
    described: _Inner = _Inner()
    """What the field says."""
    optional: _Inner | None = None
    """What the optional field says."""
    listed: list[_Inner] = Field(default_factory=list)
    """What the list says."""
    bare: _Inner = _Inner()


def test_a_field_description_wins_over_its_model_docstring_which_is_the_fallback():
    properties = schema_of(_Outer)["properties"]
    assert properties["described"]["description"] == "What the field says."
    assert properties["optional"]["description"] == "What the optional field says."
    assert properties["listed"]["description"] == "What the list says."
    assert properties["listed"]["items"]["description"] == "What the model says of itself."
    assert properties["bare"]["description"] == "What the model says of itself."
    assert properties["described"]["properties"]["x"]["description"] == "An x."


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
