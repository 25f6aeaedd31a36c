"""
The Gateway API's HTTPRoute CRD (``gateway.networking.k8s.io/v1``, standard channel v1.4), as far as
the operator writes it and the embedded router reads it.

The embedded API server enforces a CRD's structural schema and its CEL rules, so the names, types,
bounds and defaults here are the Gateway API's own: a write a real cluster would refuse is refused
here too, and a defaulted field (a backendRef's ``weight: 1``, a header match's ``type: Exact``)
reads back as it would from a real cluster. Filters the router does not act on (redirects,
rewrites, extension references) keep their content unchecked instead of being pruned away.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GROUP", "HTTPROUTE_API_VERSION", "HTTPROUTE_PLURAL", "VERSION", "build_httproute_crd"]

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
HTTPROUTE_API_VERSION = f"{GROUP}/{VERSION}"
HTTPROUTE_PLURAL = "httproutes"
BUNDLE_VERSION = "v1.4.0"

Schema = dict[str, Any]

# The Gateway API's shared string types (apis/v1/shared_types.go, object_reference_types.go).
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_MAX_ITEMS = 16
_SET: Schema = {"x-kubernetes-list-type": "set"}
_DEFAULT_MATCH = {"path": {"type": "PathPrefix", "value": "/"}}
FILTER_TYPES = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "RequestRedirect",
                "URLRewrite", "ExtensionRef")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def _string(*, min_length: int | None = 1, max_length: int | None = None, pattern: str | None = None,
            **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def _group(default: str) -> Schema:
    return _string(min_length=None, max_length=253, pattern=r"^$|" + _DNS_SUBDOMAIN, default=default)


def _kind(default: str) -> Schema:
    return _string(max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$", default=default)


def _object_name() -> Schema:
    return _string(max_length=253)


def _namespace() -> Schema:
    return _string(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _section_name() -> Schema:
    return _string(max_length=253, pattern=_DNS_SUBDOMAIN)


def _port() -> Schema:
    return {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}


def _rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _object(properties: Schema, *, required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: Schema, *, max_items: int = _MAX_ITEMS, **extra: Any) -> Schema:
    return {"type": "array", "items": items, "maxItems": max_items, **extra}


def _backend_object_reference() -> Schema:
    """BackendObjectReference: a Service by default; a Service reference must name its port."""
    return _object({
        "group": _group(""),
        "kind": _kind("Service"),
        "name": _object_name(),
        "namespace": _namespace(),
        "port": _port(),
    }, required=("name",), **{"x-kubernetes-validations": [
        _rule("(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true",
              "Must have port for Service reference"),
    ]})


def _header_modifier() -> Schema:
    """HTTPHeaderFilter: set, add and remove headers (each name once per list)."""
    header = _object({"name": _string(max_length=256, pattern=_HEADER_NAME),
                      "value": _string(max_length=4096)}, required=("name", "value"))
    keyed: Schema = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    return _object({
        "set": _array(header, **keyed),
        "add": _array(header, **keyed),
        "remove": _array({"type": "string"}, **_SET),
    })


def _request_mirror() -> Schema:
    """HTTPRequestMirrorFilter: a copy of each request (or of a share: percent or fraction) to a backend."""
    fraction = _object({
        "numerator": {"type": "integer", "format": "int32", "minimum": 0},
        "denominator": {"type": "integer", "format": "int32", "minimum": 1, "default": 100},
    }, required=("numerator",), **{"x-kubernetes-validations": [
        _rule("self.numerator <= self.denominator", "numerator must be less than or equal to denominator"),
    ]})
    return _object({
        "backendRef": _backend_object_reference(),
        "percent": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 100},
        "fraction": fraction,
    }, required=("backendRef",), **{"x-kubernetes-validations": [
        _rule("!(has(self.percent) && has(self.fraction))",
              "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"),
    ]})


def _filter_consistency(field: str, filter_type: str) -> list[dict[str, str]]:
    return [
        _rule(f"!(has(self.{field}) && self.type != '{filter_type}')",
              f"filter.{field} must be nil if the filter.type is not {filter_type}"),
        _rule(f"!(!has(self.{field}) && self.type == '{filter_type}')",
              f"filter.{field} must be specified for {filter_type} filter.type"),
    ]


def _filter() -> Schema:
    unchecked = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return _object({
        "type": {"type": "string", "enum": list(FILTER_TYPES)},
        "requestHeaderModifier": _header_modifier(),
        "responseHeaderModifier": _header_modifier(),
        "requestMirror": _request_mirror(),
        "requestRedirect": unchecked,
        "urlRewrite": unchecked,
        "extensionRef": unchecked,
    }, required=("type",), **{"x-kubernetes-validations": [
        *_filter_consistency("requestHeaderModifier", "RequestHeaderModifier"),
        *_filter_consistency("responseHeaderModifier", "ResponseHeaderModifier"),
        *_filter_consistency("requestMirror", "RequestMirror"),
    ]})


def _match() -> Schema:
    """HTTPRouteMatch: path, headers, query parameters and method, all of which must hold."""
    path = _object({
        "type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"], "default": "PathPrefix"},
        "value": _string(min_length=None, max_length=1024, default="/"),
    })
    header = _object({
        "type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
        "name": _string(max_length=256, pattern=_HEADER_NAME),
        "value": _string(max_length=4096),
    }, required=("name", "value"))
    query = _object({
        "type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
        "name": _string(max_length=256, pattern=_HEADER_NAME),
        "value": _string(max_length=1024),
    }, required=("name", "value"))
    keyed: Schema = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    return _object({
        "path": {**path, "default": _DEFAULT_MATCH["path"]},
        "headers": _array(header, **keyed),
        "queryParams": _array(query, **keyed),
        "method": {"type": "string", "enum": list(METHODS)},
    })


def _backend_ref() -> Schema:
    """HTTPBackendRef: a weighted backend (weight 0: never chosen; the default weight is 1)."""
    reference = _backend_object_reference()
    reference["properties"]["weight"] = {"type": "integer", "format": "int32", "minimum": 0,
                                         "maximum": 1_000_000, "default": 1}
    reference["properties"]["filters"] = _array({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    return reference


def _rule_schema() -> Schema:
    return _object({
        "name": _section_name(),
        "matches": _array(_match(), max_items=64, default=[_DEFAULT_MATCH]),
        "filters": _array(_filter()),
        "backendRefs": _array(_backend_ref()),
    })


def _parent_ref() -> Schema:
    return _object({
        "group": _group(GROUP),
        "kind": _kind("Gateway"),
        "namespace": _namespace(),
        "name": _object_name(),
        "sectionName": _section_name(),
        "port": _port(),
    }, required=("name",))


def _spec() -> Schema:
    unique_names: Schema = {"x-kubernetes-validations": [
        # The Gateway API writes this as `!has(l1.name) || self.exists_one(...)`. cel-python, unlike the
        # API server's CEL, does not absorb the error of a missing field on the untaken side of || inside
        # a macro, and would refuse every route that mixes named and unnamed rules; the conditional says
        # the same and evaluates only the side it takes.
        _rule("self.all(l1, has(l1.name) ? self.exists_one(l2, has(l2.name) && l1.name == l2.name) : true)",
              "Rule name must be unique within the route"),
    ]}
    rules = _array(_rule_schema(), default=[{"matches": [_DEFAULT_MATCH]}], **unique_names)
    return _object({
        "parentRefs": _array(_parent_ref(), max_items=32),
        "hostnames": _array(_string(max_length=253, pattern=_HOSTNAME)),
        "rules": rules,
    })


def build_httproute_crd() -> dict[str, Any]:
    """The CustomResourceDefinition ``httproutes.gateway.networking.k8s.io`` (v1: served and stored)."""
    schema = _object({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": _spec(),
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }, required=("spec",))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{HTTPROUTE_PLURAL}.{GROUP}",
            "annotations": {"gateway.networking.k8s.io/bundle-version": BUNDLE_VERSION,
                            "gateway.networking.k8s.io/channel": "standard"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": HTTPROUTE_PLURAL, "singular": "httproute", "kind": "HTTPRoute",
                      "listKind": "HTTPRouteList", "categories": ["gateway-api"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Hostnames", "type": "string", "jsonPath": ".spec.hostnames"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    }
