"""
API errors rendered as Kubernetes ``Status`` objects, so that every client maps them to its own
exception types (``ApiException.status``, kopf's ``APIConflictError``, kubectl's messages).
"""
from __future__ import annotations

import dataclasses
import decimal
import json
import math
from collections.abc import Sequence
from typing import Any

import attrs
import kmock

from modelrelease_local.resources import ApiResource

__all__ = [
    "ApiError", "EndpointNotFound", "FieldError", "ObjectNotFound", "ResourceNotFound", "already_exists", "bad_request",
    "conflict", "endpoint_not_found", "error_for_code", "forbidden_change", "go_format", "go_quote", "gone", "invalid",
    "invalid_fields", "invalid_object", "method_not_allowed", "not_acceptable", "not_found", "resource_not_found",
    "status_body", "strict_decoding", "unsupported_media_type",
]

_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


_NOT_FOUND_MESSAGE = "the server could not find the requested resource"


@attrs.frozen
class ApiError(kmock.KubernetesError):
    """An expected API failure; ``status`` is the HTTP code, ``reason`` the Kubernetes reason."""


# The 404s are also kmock's own kinds of "not found", so that code written against kmock's emulator
# (``except kmock.KubernetesObjectNotFoundError``) sees ours the same way. Their fields come in another
# order than KubernetesError's (kmock's subclasses redefine them): construct them by keyword only.

@attrs.frozen
class ObjectNotFound(ApiError, kmock.KubernetesObjectNotFoundError):
    """A known resource, but no such object."""


@attrs.frozen
class ResourceNotFound(ApiError, kmock.KubernetesResourceNotFoundError):
    """A resource (or subresource) that is not served."""


@attrs.frozen
class EndpointNotFound(ApiError, kmock.KubernetesEndpointNotFoundError):
    """A URL that is no part of the API."""


def resource_not_found(what: str | None = None) -> ResourceNotFound:
    message = f"{_NOT_FOUND_MESSAGE} ({what})" if what else _NOT_FOUND_MESSAGE
    return ResourceNotFound(status=404, reason="NotFound", message=message, details=None)


def endpoint_not_found() -> EndpointNotFound:
    return EndpointNotFound(status=404, reason="NotFound", message=_NOT_FOUND_MESSAGE, details=None)


def status_body(error: kmock.KubernetesError) -> dict[str, Any]:
    """The ``Status`` a real API server sends for this error (no traceback, CamelCase reasons)."""
    reason, message = error.reason, error.message
    if not isinstance(error, ApiError):
        # kmock's own errors (from its discovery reactions) carry advice for mock authors in their messages
        # and reasons with spaces; clients and kubectl expect the API server's wording.
        reason = _REASONS.get(error.status, "Unknown")
        message = _NOT_FOUND_MESSAGE if error.status == 404 else message
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message or "",
        "reason": reason or _REASONS.get(error.status, "Unknown"),
        "code": error.status,
    }
    if error.details:
        body["details"] = error.details
    return body


def _qualified(resource: ApiResource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def _details(resource: ApiResource, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"group": resource.group, "kind": resource.plural}
    if name:
        details["name"] = name
    return details


def not_found(resource: ApiResource, name: str) -> ObjectNotFound:
    return ObjectNotFound(status=404, reason="NotFound", message=f'{_qualified(resource)} "{name}" not found',
                          details=_details(resource, name))


def already_exists(resource: ApiResource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{_qualified(resource)} "{name}" already exists',
                    _details(resource, name))


def conflict(resource: ApiResource, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}',
                    _details(resource, name))


def invalid(resource: ApiResource, name: str | None, why: str) -> ApiError:
    return ApiError(422, "Invalid", f'{resource.kind} "{name or ""}" is invalid: {why}', _details(resource, name))


def forbidden_change(resource: ApiResource, name: str, why: str) -> ApiError:
    return invalid(resource, name, f"Forbidden: {why}")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message, None)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, None)


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message, None)


def unsupported_media_type(content_type: str, why: str | None = None) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", why or (
        f"the body of the request was in an unknown format - accepted media types include:"
        f" application/json, application/yaml (got {content_type!r})"), None)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message, None)


def error_for_code(code: int, message: str | None = None, reason: str | None = None) -> ApiError:
    reason = reason or _REASONS.get(code, "Unknown")
    return ApiError(code, reason, message or f"injected failure: {reason}", None)


# Field errors, in the words of the API server's field.Error: a reason (the cause type), the field's
# path, the bad value and a detail; several of them make one 422 Invalid with a cause each.

_CAUSE_WORDS = {
    "FieldValueRequired": "Required value", "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value", "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value", "FieldValueForbidden": "Forbidden", "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many", "FieldValueNotFound": "Not found",
}
_VALUE_NOT_SHOWN = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"}


def go_quote(text: str) -> str:
    """A string as Go's %q writes it (close enough: JSON's escapes, printable characters kept)."""
    return json.dumps(text, ensure_ascii=False)


def go_format(value: Any) -> str:
    """A decoded JSON value as Go's %v writes it: 100 for 100.0, 1e+06 for a million, true, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        digits = decimal.Decimal(repr(value)).normalize()
        exponent = digits.adjusted()
        if digits and (exponent < -4 or exponent >= 6):  # strconv's shortest %g switches to %e there
            mantissa = f"{digits.scaleb(-exponent):f}"
            return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
        return f"{digits:f}"
    return str(value)


@dataclasses.dataclass(frozen=True)
class FieldError:
    reason: str  # the StatusCause type: FieldValueInvalid, FieldValueRequired, ...
    field: str
    value: Any = None
    detail: str = ""

    @property
    def body(self) -> str:
        """The cause's message: what is wrong with the field, without its path."""
        words = _CAUSE_WORDS.get(self.reason, self.reason)
        if self.reason not in _VALUE_NOT_SHOWN:
            value = self.value
            if isinstance(value, str):
                shown = go_quote(value)
            elif value is None or isinstance(value, (bool, int, float)):
                shown = go_format(value)
            else:  # the server prints Go syntax here; JSON says the same to a reader
                shown = json.dumps(value, sort_keys=True)
            words = f"{words}: {shown}"
        return f"{words}: {self.detail}" if self.detail else words

    def __str__(self) -> str:
        return f"{self.field}: {self.body}"


def invalid_object(group: str, kind: str, name: str, problems: Sequence[FieldError]) -> ApiError:
    """422 Invalid for an object of a group and kind, one cause per problem (as errors.NewInvalid)."""
    qualified = f"{kind}.{group}" if group else kind
    messages = list(dict.fromkeys(str(problem) for problem in problems))
    summary = messages[0] if len(messages) == 1 else f"[{', '.join(messages)}]"
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind, "causes": [
        {"reason": problem.reason, "message": problem.body, "field": problem.field} for problem in problems]}
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def invalid_fields(resource: ApiResource, name: str, problems: Sequence[FieldError]) -> ApiError:
    return invalid_object(resource.group, resource.kind, name, problems)


def strict_decoding(resource: ApiResource, unknown: Sequence[str], *, patch: bool) -> ApiError:
    """400 for unknown fields under fieldValidation=Strict; a patch's error names no kind, as the server's."""
    why = "strict decoding error: " + ", ".join(f'unknown field "{path}"' for path in unknown)
    if not patch:
        why = f'{resource.kind} in version "{resource.version}" cannot be handled as a {resource.kind}: {why}'
    return bad_request(why)
