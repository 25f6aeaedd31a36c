"""Generate the CustomResourceDefinition from the pydantic models (run by `make crds`).

Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no $ref, no anyOf of types.
Pydantic emits JSON Schema 2020-12; this module inlines references and rewrites the few shapes
Kubernetes does not accept.
"""

from __future__ import annotations

import re
from typing import Any

from modelrelease import api
from modelrelease.api.cel_rules import attach_rules
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ModelReleaseStatus

_DROP = {"title", "default", "$defs"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        # Inlining a model: the keywords written at the field (its description above all) win over the
        # model's own, so one model can be described differently where it is used (status.stable,
        # status.canary, status.history[]); the model's class docstring is only the fallback.
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        types = {o.get("type") for o in options}
        if len(options) == 1:
            # `X | None`: the field's keywords (description, default) sit beside the anyOf and win.
            return _structural({**options[0], **rest}, defs)
        if types == {"string", "integer"}:
            return {**_clean(rest), "x-kubernetes-int-or-string": True}
        raise ValueError(f"cannot express anyOf {options} in a structural schema")
    out = _clean(node)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "exclusiveMinimum" in out:
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out:
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        if "properties" in out:
            out["properties"] = {k: _structural(v, defs) for k, v in out["properties"].items()}
        extra = out.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif "properties" not in out:
            # A free-form map such as a pod template: Kubernetes keeps it as written.
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out.pop("additionalProperties", None)
    if out.get("type") == "array":
        out["items"] = _structural(out.get("items", {}), defs)
    if not out.get("type") and not out.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k not in _DROP}
    if isinstance(out.get("description"), str):
        out["description"] = _prose(out["description"])
    return out


def _prose(docstring: str) -> str:
    """A docstring as kubectl explain should show it: its line breaks were only for the source, so each
    paragraph becomes one line (kubectl wraps it to the terminal); blank lines still part paragraphs."""
    return "\n\n".join(" ".join(part.split()) for part in re.split(r"\n\s*\n", docstring.strip()))


def schema_of(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    return _structural(raw, raw.get("$defs", {}))


# The descriptions Kubernetes gives TypeMeta's fields (what controller-gen writes into every CRD).
API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
    "recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this "
    "from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.name"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    # The cross-field rules the API server can enforce at admission (CEL); the operator checks them too.
    spec_schema = attach_rules(schema_of(ModelReleaseSpec))
    spec_schema["description"] = "What to train, how to gate it, and how to canary and release it."
    status_schema = schema_of(ModelReleaseStatus)
    status_schema["description"] = "Everything the operator knows about this release; written only by it."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model trained, gated and released in stages, with canaries.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": API_VERSION_DESCRIPTION},
                                "kind": {"type": "string", "description": KIND_DESCRIPTION},
                                # Only `type: object` is allowed here: the API server rejects a CRD whose
                                # root metadata schema says anything else, a description included, and
                                # publishes ObjectMeta with its standard description in its place.
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
