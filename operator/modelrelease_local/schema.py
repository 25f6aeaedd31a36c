"""
A CRD version's structural schema, applied to custom resources as kube-apiserver applies it.

The order is the server's: the request body is pruned of unknown fields (reported according to the
``fieldValidation`` directive), defaulted from ``default:``, then validated against the schema; a
failed validation is one 422 ``Invalid`` naming every field, in kube-openapi's words.

Pruning and defaulting are a small walk of the schema. The keyword checks are jsonschema's Draft 4
validator (the dialect OpenAPI v3.0 schemas are written in: boolean ``exclusiveMinimum``), taught
the OpenAPI and Kubernetes additions: ``nullable`` (a null is checked against its type only),
``x-kubernetes-int-or-string``, ``x-kubernetes-embedded-resource``, the formats the server checks,
and an integer type that accepts integral floats (``2.0``), as Go's JSON decoding does.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema import ValidationError

from modelrelease_local import errors
from modelrelease_local.errors import FieldError
from modelrelease_local.resources import ApiResource

__all__ = ["DIRECTIVES", "FieldValidation", "apply_defaults", "prune", "validate"]

Schema = Mapping[str, Any]
Path = Sequence[str | int]

# The fieldValidation query parameter's values; the server's default is Warn.
DIRECTIVES = ("Ignore", "Strict", "Warn")

# ObjectMeta's own fields: anything else under a custom resource's metadata is dropped on decoding.
_OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
})
_TYPE_FIELDS = ("apiVersion", "kind")


@dataclasses.dataclass
class FieldValidation:
    """How a write treats unknown fields (``?fieldValidation=``) and where its warnings go."""

    directive: str = "Warn"
    warnings: list[str] = dataclasses.field(default_factory=list)
    patch: bool = False  # the body is a patch: its strict-decoding error names no kind

    @classmethod
    def from_query(cls, value: str | None, options_kind: str) -> FieldValidation:
        """The directive of a request; an unknown one is refused as the server validates its options."""
        if value in (None, ""):
            return cls()
        if value not in DIRECTIVES:
            raise errors.invalid_object("meta.k8s.io", options_kind, "", [FieldError(
                "FieldValueNotSupported", "fieldValidation", value,
                "supported values: " + ", ".join(errors.go_quote(v) for v in ("", *DIRECTIVES)))])
        return cls(directive=value)

    def for_patch(self) -> FieldValidation:
        return dataclasses.replace(self, patch=True)

    def unknown_fields(self, resource: ApiResource, paths: Sequence[str]) -> None:
        """Strict refuses the write, Warn adds a warning per field, Ignore says nothing."""
        if not paths or self.directive == "Ignore":
            return
        if self.directive == "Strict":
            raise errors.strict_decoding(resource, paths, patch=self.patch)
        self.warnings.extend(f'unknown field "{path}"' for path in paths)


# Pruning.

def _path_text(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith("\0"):  # a key of an additionalProperties map, as the pruner writes it
            text += f"[{part[1:]}]"
        else:
            text += f".{part}" if text else part
    return text


def prune(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Drop the fields the schema does not know, in place; their paths, as the server reports them."""
    unknown: list[str] = []
    _prune_object(obj, schema, [], unknown, resource_root=True)
    unknown.sort()
    meta_unknown = _prune_meta(obj.get("metadata"), ["metadata"])
    return unknown + meta_unknown


def _prune_meta(meta: Any, path: list[str | int]) -> list[str]:
    if not isinstance(meta, dict):
        return []
    extra = sorted(key for key in meta if key not in _OBJECT_META_FIELDS)
    for key in extra:
        del meta[key]
    return [_path_text([*path, key]) for key in extra]


def _prune_value(value: Any, schema: Schema, path: list[str | int], unknown: list[str]) -> None:
    if isinstance(value, dict):
        _prune_object(value, schema, path, unknown, resource_root=bool(schema.get("x-kubernetes-embedded-resource")))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _prune_value(item, schema["items"], [*path, index], unknown)


def _prune_object(obj: dict[str, Any], schema: Schema, path: list[str | int], unknown: list[str], *,
                  resource_root: bool) -> None:
    properties: Mapping[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
    for key in list(obj):
        if resource_root and key in (*_TYPE_FIELDS, "metadata"):
            if key == "metadata" and path:  # an embedded object's metadata is an ObjectMeta too
                unknown.extend(_prune_meta(obj[key], [*path, key]))
            continue
        child_schema = properties.get(key)
        child_path: list[str | int] = [*path, key]
        if child_schema is None and isinstance(additional, Mapping):
            child_schema, child_path = additional, [*path, f"\0{key}"]
        if child_schema is None:
            if not preserve:
                del obj[key]
                unknown.append(_path_text(child_path))
            continue
        if obj[key] is None and not child_schema.get("nullable") and "default" not in child_schema:
            del obj[key]  # a null where null is not allowed reads as absent (and is defaulted, if it can be)
            continue
        _prune_value(obj[key], child_schema, child_path, unknown)


# Defaulting.

def apply_defaults(value: Any, schema: Schema) -> None:
    """Fill absent fields (and non-nullable nulls) from ``default:``, top down, in place."""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        for key, child_schema in properties.items():
            missing = key not in value or (value[key] is None and not child_schema.get("nullable"))
            if missing and "default" in child_schema:
                value[key] = copy.deepcopy(child_schema["default"])
        additional = schema.get("additionalProperties")
        for key, child in value.items():
            child_schema = properties.get(key) or (additional if isinstance(additional, Mapping) else None)
            if child_schema is not None:
                apply_defaults(child, child_schema)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            apply_defaults(item, schema["items"])


# Validation: jsonschema's Draft 4 keywords, with the OpenAPI and Kubernetes additions.

def _is_integer(checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())


def _type(validator: Any, types: Any, instance: Any, schema: Schema) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable"):
        return
    allowed = [types] if isinstance(types, str) else list(types)
    if not any(validator.is_type(instance, kind) for kind in allowed):
        yield ValidationError(",".join(allowed))


def _int_or_string(validator: Any, enabled: Any, instance: Any, schema: Schema) -> Iterator[ValidationError]:
    if not enabled or (instance is None and schema.get("nullable")):
        return
    if not (isinstance(instance, str) or _is_integer(None, instance)):
        yield ValidationError("integer,string")


def _embedded_resource(validator: Any, enabled: Any, instance: Any, schema: Schema) -> Iterator[ValidationError]:
    if enabled and isinstance(instance, dict):
        for key in _TYPE_FIELDS:
            if not instance.get(key):
                yield ValidationError(key)


def _not_on_null(function: Any) -> Any:
    # kube-openapi checks a null against its type (and nullable) only, never against other keywords.
    def check(validator: Any, value: Any, instance: Any, schema: Schema) -> Any:
        return None if instance is None else function(validator, value, instance, schema)
    return check


_DATE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[tT](\d{2}):(\d{2}):(\d{2})(\.\d+)?([zZ]|[+-]\d{2}:\d{2})$")
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date")
def _is_date(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        datetime.date.fromisoformat(instance)
    except ValueError:
        return False
    return len(instance) == 10


@_FORMATS.checks("date-time")
def _is_date_time(instance: object) -> bool:
    # RFC 3339 with a T (either case) and a zone, as the server's strfmt.IsDateTime reads it.
    if not isinstance(instance, str):
        return True
    match = _DATE_TIME.match(instance)
    if match is None or not _is_date(match.group(1)):
        return False
    return int(match.group(2)) < 24 and int(match.group(3)) < 60 and int(match.group(4)) < 60


_KEYWORDS = {keyword: _not_on_null(function) for keyword, function in jsonschema.Draft4Validator.VALIDATORS.items()
             if keyword not in ("type", "$ref")}
_Validator = jsonschema.validators.create(
    meta_schema=jsonschema.Draft4Validator.META_SCHEMA,
    validators={**_KEYWORDS, "type": _type, "x-kubernetes-int-or-string": _int_or_string,
                "x-kubernetes-embedded-resource": _embedded_resource},
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    version="openapi-v3-structural",
)


def validate(obj: Mapping[str, Any], schema: Schema, old: Mapping[str, Any] | None = None) -> list[FieldError]:
    """
    Every problem of the object, in the server's words; on an update, problems in values that the
    update leaves as they were are forgiven (validation ratcheting, on by default since 1.30).
    """
    problems: list[FieldError] = []
    seen: set[str] = set()
    validator = _Validator(schema, format_checker=_FORMATS)
    for error in validator.iter_errors(obj):
        path = list(error.absolute_path)
        if old is not None and _unchanged(old, obj, path):
            continue
        for problem in _field_errors(error, path):
            if str(problem) not in seen:  # "required" is reported once per missing field
                seen.add(str(problem))
                problems.append(problem)
    return problems


_MISSING = object()


def _at(obj: Any, path: Path) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return _MISSING
            obj = obj[part]
        else:
            if not isinstance(obj, dict) or part not in obj:
                return _MISSING
            obj = obj[part]
    return obj


def _unchanged(old: Any, new: Any, path: Path) -> bool:
    before = _at(old, path)
    return before is not _MISSING and before == _at(new, path)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for python_type, name in ((str, "string"), (int, "integer"), (float, "number"), (dict, "object"),
                              (list, "array")):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


# kube-openapi's messages for the checks whose field error is a plain Invalid (or, for format, TypeInvalid).
_DETAILS = {
    "minLength": "{where} should be at least {bound} chars long",
    "pattern": "{where} should match '{bound}'",
    "minItems": "{where} should have at least {bound} items",
    "minProperties": "{where} should have at least {bound} properties",
    "uniqueItems": "{where} shouldn't contain duplicates",
    "multipleOf": "{where} should be a multiple of {bound}",
    "format": "{where} must be of type {bound}: {quoted}",
    "anyOf": "{where} must validate at least one schema (anyOf)",
    "oneOf": "{where} must validate one and only one schema (oneOf)",
    "allOf": "{where} must validate all the schemas (allOf)",
    "not": "{where} must not validate the schema (not)",
}


def _field_errors(error: ValidationError, path: list[str | int]) -> list[FieldError]:
    field = _path_text(path)
    keyword, bound, value, schema = error.validator, error.validator_value, error.instance, error.schema
    where = f"{field} in body"
    go = errors.go_format
    if keyword in ("type", "x-kubernetes-int-or-string"):
        actual = _type_name(value)
        return [FieldError("FieldValueTypeInvalid", field, actual,
                           f"{where} must be of type {error.message}: {errors.go_quote(actual)}")]
    if keyword == "required":
        return [FieldError("FieldValueRequired", _path_text([*path, name]))
                for name in bound if isinstance(value, dict) and name not in value]
    if keyword == "x-kubernetes-embedded-resource":
        return [FieldError("FieldValueRequired", _path_text([*path, error.message]), detail="must not be empty")]
    if keyword == "enum":
        allowed = [item if isinstance(item, str) else json.dumps(item) for item in bound]
        return [FieldError("FieldValueNotSupported", field, value,
                           "supported values: " + ", ".join(errors.go_quote(item) for item in allowed))]
    if keyword in ("maximum", "minimum"):
        exclusive = schema.get("exclusiveMaximum" if keyword == "maximum" else "exclusiveMinimum") is True
        relation = {"maximum": "less than", "minimum": "greater than"}[keyword]
        detail = f"{where} should be {relation}{'' if exclusive else ' or equal to'} {go(float(bound))}"
        return [FieldError("FieldValueInvalid", field, value, detail)]
    if keyword == "maxLength":
        return [FieldError("FieldValueTooLong", field, value, f"may not be longer than {bound}")]
    if keyword in ("maxItems", "maxProperties"):
        return [FieldError("FieldValueTooMany", field, len(value), f"must have at most {bound} items")]
    if keyword == "multipleOf":
        bound = go(float(bound))
    template = _DETAILS.get(keyword)
    quoted = errors.go_quote(str(value))
    detail = template.format(where=where, bound=bound, quoted=quoted) if template else error.message
    shown: Any = value
    if keyword in ("minItems", "minProperties") and isinstance(value, (list, dict)):
        shown = len(value)
    elif keyword in ("uniqueItems", "anyOf", "oneOf", "allOf", "not"):
        shown = ""
    reason = "FieldValueTypeInvalid" if keyword == "format" else "FieldValueInvalid"
    return [FieldError(reason, field, shown, detail)]
