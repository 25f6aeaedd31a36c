"""
A custom resource's ``x-kubernetes-validations`` (CEL) rules, checked as kube-apiserver 1.32 checks
them (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules):

- a rule sits at any node of the structural schema; ``self`` is the value there, and a rule under
  an array's ``items`` or a map's ``additionalProperties`` runs once per item or value; a node that
  is absent (or null) runs none of its rules;
- values are typed by the schema (an integer written into a ``number`` field is a double), object
  property names are escaped as the server escapes them (``__dash__``, ``__namespace__``), and at the
  root only ``metadata.name`` and ``metadata.generateName`` are visible;
- a rule that is false is ``<path>: Invalid value: "<type>": <message>`` (or ``messageExpression``,
  ``reason``, ``fieldPath``); one whose evaluation fails (``no such key``) reports the error and the
  rule; all violations are reported together;
- on an update, a transition rule (one that reads ``oldSelf``) runs where the old object has a
  correlatable value (through object properties, map values and ``listType: map`` items, not atomic
  lists or sets); a value the update leaves equal to its correlated old value is not checked again
  (validation ratcheting, on by default since 1.30);
- a schema type error blocks the rules: the server reports that they were not checked.

cel-python evaluates the expressions: it follows the CEL specification where it matters here (errors
inside ``exists``/``all`` absorbed as ``||``/``&&`` absorb them, ``size`` of a string in code points,
RE2 ``matches``). The Kubernetes list library is added as functions. Compiled programs are cached per
schema, so a request only evaluates.
"""
from __future__ import annotations

import collections
import dataclasses
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import celpy
from celpy import celtypes

from modelrelease_local.errors import FieldError, go_quote
from modelrelease_local.resources import ApiResource

__all__ = ["compile_errors", "rule_problems", "violations"]

Schema = Mapping[str, Any]

# The schema problems after which the server does not run the rules (hasBlockingErr).
# The server skips the rules after a type or enum error. It also runs them under a runtime cost budget,
# which a list or string past its schema bound may exhaust; cel-python is far slower than cel-go and
# keeps no cost, so here an over-long list or string skips the rules too (the write is refused by the
# schema's error either way; only the note differs from the server's cost-budget message).
_BLOCKING_REASONS = frozenset({"FieldValueTypeInvalid", "FieldValueNotSupported", "FieldValueTooMany",
                               "FieldValueTooLong"})
_INT64 = range(-(2**63), 2**63)
_NOT_CHECKED = ("some validation rules were not checked because the object was invalid; correct the existing "
                "errors to complete validation")
_REASONS = {"FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate", "FieldValueInvalid"}


def _cel_error(message: str) -> celpy.CELEvalError:
    return celpy.CELEvalError(message)


def _is_sorted(items: Sequence[Any]) -> Any:
    return celtypes.BoolType(all(items[i] <= items[i + 1] for i in range(len(items) - 1)))


def _sum(items: Sequence[Any]) -> Any:
    total: Any = celtypes.IntType(0)
    for i, item in enumerate(items):
        total = item if i == 0 else total + item
    return total


def _extreme(name: str, pick: Callable[..., Any]) -> Callable[[Sequence[Any]], Any]:
    def extreme(items: Sequence[Any]) -> Any:
        return pick(items) if len(items) else _cel_error(f"{name}(list) called on empty list")
    return extreme


def _index_of(items: Sequence[Any], wanted: Any) -> Any:
    return celtypes.IntType(next((i for i, item in enumerate(items) if item == wanted), -1))


def _last_index_of(items: Sequence[Any], wanted: Any) -> Any:
    return celtypes.IntType(next((i for i in range(len(items) - 1, -1, -1) if items[i] == wanted), -1))


# Kubernetes' list library (k8s.io/apiserver/pkg/cel/library/lists.go), which standard CEL lacks.
_KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "isSorted": _is_sorted, "sum": _sum, "min": _extreme("min", min), "max": _extreme("max", max),
    "indexOf": _index_of, "lastIndexOf": _last_index_of,
}

_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import",
    "let", "loop", "package", "namespace", "return", "var", "void", "while",
})
_ESCAPABLE = re.compile(r"^[a-zA-Z_./-][a-zA-Z0-9_./-]*$")


def _property_name(name: str) -> str | None:
    """The name a rule uses for an object property, or None where the server makes it unreachable."""
    if name in _RESERVED:
        return f"__{name}__"
    if not _ESCAPABLE.match(name):
        return None
    return (name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__")
            .replace("/", "__slash__"))


def to_cel(value: Any, schema: Schema) -> Any:
    """A decoded JSON value as the CEL value the server gives a rule: typed by the schema."""
    if value is None:
        return None
    kind = schema.get("type")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if key in properties:
                name = _property_name(key)
                if name is not None:
                    out[celtypes.StringType(name)] = to_cel(item, properties[key])
            elif isinstance(extra, Mapping):
                out[celtypes.StringType(key)] = to_cel(item, extra)
            else:  # x-kubernetes-preserve-unknown-fields
                out[celtypes.StringType(key)] = celpy.json_to_cel(item)
        return celtypes.MapType(out)
    if isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([to_cel(item, items) for item in value])
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if kind == "integer" and isinstance(value, float) and value.is_integer() and int(value) in _INT64:
        return celtypes.IntType(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return celtypes.DoubleType(float(value))  # as Go decodes a JSON number beyond int64: a float64
    return celpy.json_to_cel(value)


@dataclasses.dataclass(frozen=True)
class _Rule:
    text: str
    message: str | None
    message_expression: Any  # a celpy Runner, or None
    field_path: str
    reason: str
    transition: bool
    program: Any  # a celpy Runner; None when the rule does not compile
    compile_error: str | None


@dataclasses.dataclass
class _Node:
    schema: Schema
    rules: tuple[_Rule, ...] = ()
    properties: dict[str, _Node] = dataclasses.field(default_factory=dict)
    items: _Node | None = None
    values: _Node | None = None  # additionalProperties
    map_keys: tuple[str, ...] | None = None  # items are correlated by these keys (listType: map)
    transition_below: bool = False


_ENVIRONMENT = celpy.Environment()
_OLD_SELF = re.compile(r"\boldSelf\b")


def _compile(text: str) -> tuple[Any, str | None]:
    try:
        return _ENVIRONMENT.program(_ENVIRONMENT.compile(text), functions=_KUBERNETES_FUNCTIONS), None
    except celpy.CELParseError as error:
        return None, " ".join(str(error).split())


def _compile_rule(declaration: Mapping[str, Any]) -> _Rule:
    text = str(declaration.get("rule", ""))
    program, error = _compile(text)
    expression = declaration.get("messageExpression")
    message_program = _compile(str(expression))[0] if expression else None
    reason = declaration.get("reason") or "FieldValueInvalid"
    return _Rule(
        text=text, message=declaration.get("message") or None, message_expression=message_program,
        field_path=str(declaration.get("fieldPath") or ""),
        reason=reason if reason in _REASONS else "FieldValueInvalid",
        transition=bool(_OLD_SELF.search(text)) and not declaration.get("optionalOldSelf"),
        program=program, compile_error=error,
    )


def _build(schema: Schema) -> _Node | None:
    """The schema's nodes that carry rules or lead to some; None where a subtree has none."""
    node = _Node(schema, tuple(_compile_rule(rule) for rule in schema.get("x-kubernetes-validations") or ()))
    for key, child_schema in (schema.get("properties") or {}).items():
        child = _build(child_schema) if isinstance(child_schema, Mapping) else None
        if child is not None:
            node.properties[key] = child
    if isinstance(schema.get("items"), Mapping):
        node.items = _build(schema["items"])
        if schema.get("x-kubernetes-list-type") == "map":
            node.map_keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
    if isinstance(schema.get("additionalProperties"), Mapping):
        node.values = _build(schema["additionalProperties"])
    children = [*node.properties.values(), *(c for c in (node.items, node.values) if c is not None)]
    if not node.rules and not children:
        return None
    node.transition_below = any(r.transition for r in node.rules) or any(c.transition_below for c in children)
    return node


# CRDs change rarely: compile a schema's rules once. Keyed by the schema object, which the entry
# holds, so its id cannot be reused while cached.
_CACHE: collections.OrderedDict[int, tuple[Schema, _Node | None]] = collections.OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def _compiled(schema: Schema) -> _Node | None:
    with _CACHE_LOCK:
        hit = _CACHE.get(id(schema))
        if hit is not None and hit[0] is schema:
            _CACHE.move_to_end(id(schema))
            return hit[1]
    node = _build(schema)
    with _CACHE_LOCK:
        _CACHE[id(schema)] = (schema, node)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return node


def _go_error(error: celpy.CELEvalError) -> str:
    """cel-python's evaluation error in cel-go's words (what the server prints)."""
    text, kind = (*error.args, None, None)[:2]
    missing = re.match(r"no such member in mapping: '(.*)'", str(text))
    if missing:
        return f"no such key: {missing.group(1)}"
    if kind is IndexError:
        return "index out of bounds"
    if kind is ZeroDivisionError:
        return "division by zero"
    if kind is TypeError or "no matching overload" in str(text):
        return "no such overload"
    return str(text)


def _evaluate(program: Any, activation: dict[str, Any]) -> Any:
    try:
        return program.evaluate(activation)
    except celpy.CELEvalError as error:
        return error


def _field(path: str, suffix: str = "") -> str:
    joined = f"{path}{suffix}" if path else suffix.lstrip(".")
    return joined or "<nil>"


def _check_rules(node: _Node, value: Any, old: Any, unchanged: bool, path: str, out: list[FieldError]) -> None:
    kind = str(node.schema.get("type") or "")
    self_value = to_cel(_visible(value, path), node.schema)
    old_value = to_cel(_visible(old, path), node.schema) if old is not None else None
    for rule in node.rules:
        if rule.transition and old_value is None:
            continue  # a transition rule needs an old value to compare with
        if unchanged and not rule.transition:
            continue  # ratcheting: an unchanged value is not checked again
        if rule.program is None:
            out.append(FieldError("FieldValueInvalid", _field(path), kind,
                                  f"compilation failed: {rule.compile_error}"))
            continue
        activation = {"self": self_value, **({"oldSelf": old_value} if rule.transition else {})}
        result = _evaluate(rule.program, activation)
        if isinstance(result, celpy.CELEvalError):
            error = _go_error(result)
            detail = (f"'{error}': call arguments did not match a supported operator, function or macro signature "
                      f"for rule: {rule.text.strip()}" if error == "no such overload"
                      else f"{error} evaluating rule: {rule.text.strip()}")
            out.append(FieldError("FieldValueInvalid", _field(path), kind, detail))
        elif not isinstance(result, celtypes.BoolType):
            out.append(FieldError("FieldValueInvalid", _field(path), kind,
                                  f"rule did not evaluate to a bool but to {type(result).__name__}: {rule.text}"))
        elif not result:
            out.append(_violation(rule, _field(path, rule.field_path), kind, activation))


def _violation(rule: _Rule, field: str, kind: str, activation: dict[str, Any]) -> FieldError:
    detail = rule.message or f"failed rule: {rule.text.strip()}"
    if rule.message_expression is not None:
        custom = _evaluate(rule.message_expression, activation)
        if isinstance(custom, str) and custom.strip():
            detail = str(custom)
    if rule.reason == "FieldValueDuplicate":
        return FieldError(rule.reason, field, kind)
    return FieldError(rule.reason, field, kind, detail)


def _visible(value: Any, path: str) -> Any:
    """At the root, a rule sees only metadata.name and metadata.generateName."""
    if path or not isinstance(value, dict) or not isinstance(value.get("metadata"), dict):
        return value
    metadata = {key: value["metadata"][key] for key in ("name", "generateName") if key in value["metadata"]}
    return {**value, "metadata": metadata}


def _old_item(node: _Node, item: Any, old: Any) -> Any:
    if not node.map_keys or not isinstance(old, list) or not isinstance(item, dict):
        return None
    key = tuple(item.get(k) for k in node.map_keys)
    return next((o for o in old if isinstance(o, dict) and tuple(o.get(k) for k in node.map_keys) == key), None)


def _walk(node: _Node, value: Any, old: Any, path: str, out: list[FieldError]) -> None:
    if value is None:
        return
    unchanged = old is not None and old == value
    if unchanged and not node.transition_below:
        return
    if node.rules:
        _check_rules(node, value, old, unchanged, path, out)
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for key, child in node.properties.items():
            if key in value:
                _walk(child, value[key], old_map.get(key), f"{path}.{key}" if path else key, out)
        if node.values is not None:
            for key, item in value.items():
                if key not in node.properties:
                    _walk(node.values, item, old_map.get(key), f"{path}[{key}]", out)
    elif isinstance(value, list) and node.items is not None:
        for index, item in enumerate(value):
            _walk(node.items, item, _old_item(node, item, old), f"{path}[{index}]", out)


def violations(schema: Schema, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[FieldError]:
    """Every rule of the schema the object breaks, in the server's words (old: the stored object)."""
    root = _compiled(schema)
    out: list[FieldError] = []
    if root is not None:
        _walk(root, obj, old, "", out)
    return out


def rule_problems(resource: ApiResource, obj: Mapping[str, Any], old: Mapping[str, Any] | None,
                  schema_problems: Sequence[FieldError] = ()) -> list[FieldError]:
    """The CEL problems to add to the schema's: none to check, the rules' violations, or the note that
    a type error kept them from running."""
    if resource.schema is None or _compiled(resource.schema) is None:
        return []  # no rules: the server has no CEL validator for the version, and so no note either
    if any(problem.reason in _BLOCKING_REASONS for problem in schema_problems):
        return [FieldError("FieldValueInvalid", "<nil>", "null", _NOT_CHECKED)]
    return violations(resource.schema, obj, old)


def compile_errors(schema: Schema, where: str = "openAPIV3Schema") -> list[str]:
    """Each rule of a CRD version's schema that does not compile, as the server refuses the CRD."""
    found: list[str] = []

    def visit(node: Schema, at: str) -> None:
        for index, declaration in enumerate(node.get("x-kubernetes-validations") or ()):
            rule = _compile_rule(declaration)
            if rule.compile_error:
                found.append(f"{at}.x-kubernetes-validations[{index}].rule: Invalid value: "
                             f"{go_quote(rule.text)}: compilation failed: {rule.compile_error}")
        for key, child in (node.get("properties") or {}).items():
            visit(child, f"{at}.properties[{key}]")
        for keyword in ("items", "additionalProperties"):
            if isinstance(node.get(keyword), Mapping):
                visit(node[keyword], f"{at}.{keyword}")

    visit(schema, where)
    return found
