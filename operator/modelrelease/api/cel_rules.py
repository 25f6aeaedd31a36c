"""The spec's cross-field rules as CEL, for the CRD's ``x-kubernetes-validations`` (admission time).

The operator's own validation (``api/spec.py``) stays the authority: it runs on every pass and also
checks what CEL cannot state (durations, PromQL templates). These rules restate the part the API
server can refuse before a bad spec is stored, so ``kubectl apply`` fails with the reason instead of
the release turning ``Invalid`` later. Each message names the field and the fix; the API server puts
the field path in front of it.

Only what a Kubernetes 1.32 API server offers is used: the standard macros, ``has``, ``size``,
``matches``, ``startsWith`` and the Kubernetes list library's ``isSorted``. The server estimates each
rule's cost from the schema's bounds and refuses a CRD over budget, so every list and string a rule
iterates carries ``maxItems``/``maxLength`` (set in ``api/spec.py`` with ``Field(max_length=...)``, so
the operator's validation agrees).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from modelrelease.promql.presets import PRESETS

__all__ = ["RULES", "Rule", "attach_rules"]

# The DNS label check of api/base.py, as the API server's RE2 reads it.
DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


@dataclasses.dataclass(frozen=True)
class Rule:
    rule: str
    """A CEL expression over ``self`` (the value at the node the rule sits on) that must be true."""
    message: str
    """What is wrong and how to fix it; the API server prefixes the field path."""
    field_path: str | None = None
    """Where below the node the error is reported (``.analysis.checks``), when it is not the node."""

    def declaration(self) -> dict[str, str]:
        """The rule as an entry of ``x-kubernetes-validations``."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _dns_label(what: str, max_length: int, why: str) -> Rule:
    return Rule(
        f"self.matches('{DNS_LABEL_PATTERN}')",
        f"{what} must be lower-case letters, digits and '-', starting and ending with a letter or digit, "
        f"at most {max_length} characters ({why})",
    )


def _at_most_one(first: str, second: str, message: str) -> Rule:
    return Rule(f"!(has(self.{first}) && has(self.{second}))", message)


def _exactly_one(first: str, second: str) -> Rule:
    return Rule(f"has(self.{first}) != has(self.{second})", f"set exactly one of {first} or {second}")


def _ordered(low: str, high: str) -> Rule:
    return Rule(
        f"!has(self.{low}) || !has(self.{high}) || self.{low} <= self.{high}",
        f"{low} is above {high}, so no value could pass; lower {low} or raise {high}",
        f".{low}",
    )


def _unique_names(what: str) -> Rule:
    return Rule(
        "self.all(x, self.exists_one(y, y.name == x.name))",
        f"{what} names must be unique; rename the repeated one",
    )


_LAST_STAGE = "self[size(self) - 1]"
_ANY_WEIGHT = "self.stages.exists(s, s.steps.exists(t, {}))"

# Keyed by the node's path below spec: "" is spec itself, "stages[]" each stage, "a.b" a property.
RULES: Mapping[str, tuple[Rule, ...]] = {
    "": (
        Rule(
            f"!{_ANY_WEIGHT.format('t.weight < 100')}"
            " || (has(self.analysis) && has(self.analysis.checks) && size(self.analysis.checks) > 0)",
            "analysis.checks are required when a step has a weight below 100: without them nothing judges "
            "the canary before it takes all traffic; add a check (e.g. preset: error-rate) or a prometheus "
            "query",
            ".analysis.checks",
        ),
        Rule(
            f"!{_ANY_WEIGHT.format('t.weight > 0 && t.weight < 100')}"
            " || !has(self.serving) || !has(self.serving.replicas) || self.serving.replicas >= 2",
            "serving.replicas must be at least 2 when a step has a weight between 0 and 100: the canary "
            "needs its own pod beside the stable one",
            ".serving.replicas",
        ),
    ),
    "model.name": (_dns_label("model.name", 40, "it is filled into queries as {{ model }} and into object names"),),
    "model.storage": (
        _exactly_one("pvc", "hostPath"),
        Rule(
            "!has(self.mountPath) || self.mountPath.startsWith('/')",
            "mountPath must be an absolute path such as /models",
            ".mountPath",
        ),
    ),
    "stages": (
        _unique_names("stage"),
        Rule(
            f"{_LAST_STAGE}.steps[size({_LAST_STAGE}.steps) - 1].weight == 100",
            "the last stage must end at weight 100; add a step with weight: 100 to the last stage",
        ),
    ),
    "stages[]": (
        _exactly_one("training", "modelUri"),
        Rule(
            "!has(self.modelUri) || !has(self.gates) || size(self.gates) == 0",
            "gates need the metrics of a training run; remove them or train this stage",
            ".gates",
        ),
        Rule(
            "self.steps.map(s, s.weight).isSorted()",
            "weights may only grow within a stage; order the steps by weight",
            ".steps",
        ),
    ),
    "stages[].name": (_dns_label("a stage name", 30, "it becomes part of Job and version names"),),
    "stages[].gates[]": (
        Rule(
            "has(self.min) || has(self.max) || has(self.maxDrop) || has(self.maxRelativeDrop)",
            "a gate needs min, max, maxDrop or maxRelativeDrop",
        ),
        _ordered("min", "max"),
    ),
    "analysis": (
        Rule(
            "!has(self.checks) || size(self.checks) == 0 || has(self.prometheus)",
            "checks need prometheus.url; set analysis.prometheus.url (e.g. http://prometheus.monitoring:9090)",
            ".prometheus",
        ),
    ),
    "analysis.prometheus": (
        _at_most_one("bearerTokenSecretRef", "basicAuth", "set bearerTokenSecretRef or basicAuth, not both"),
        Rule(
            "!(has(self.insecureSkipVerify) && self.insecureSkipVerify && has(self.caSecretRef))",
            "insecureSkipVerify would ignore caSecretRef; set one of them",
        ),
    ),
    "analysis.checks": (_unique_names("check"),),
    "analysis.checks[]": (
        _exactly_one("preset", "query"),
        Rule(
            "!has(self.preset) || self.preset in [" + ", ".join(f"'{name}'" for name in PRESETS) + "]",
            f"unknown preset; the presets are {', '.join(PRESETS)}",
            ".preset",
        ),
        Rule(
            "has(self.preset) || has(self.min) || has(self.max) || has(self.minRatio) || has(self.maxRatio)"
            " || has(self.compare)",
            "a check needs min, max, minRatio, maxRatio or compare",
        ),
        _ordered("min", "max"),
        _ordered("minRatio", "maxRatio"),
    ),
    "analysis.checks[].name": (_dns_label("a check name", 40, "it names the check in status and metrics"),),
}


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split(".") if path else []:
        key, _, rest = part.partition("[]")
        try:
            node = node["properties"][key]
            if part.endswith("[]"):
                node = node["items"]
        except KeyError:
            raise KeyError(f"cel_rules.RULES names {path!r}, which the spec schema does not have at {part!r}; "
                           "fix the path to the field's camelCase name") from None
        if rest:
            raise ValueError(f"cel_rules.RULES path {path!r}: write a list's items as 'field[]'")
    return node


def attach_rules(spec_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the spec's structural schema with each node's rules as ``x-kubernetes-validations``."""
    out = copy.deepcopy(dict(spec_schema))
    for path, rules in RULES.items():
        _node(out, path)["x-kubernetes-validations"] = [rule.declaration() for rule in rules]
    return out
