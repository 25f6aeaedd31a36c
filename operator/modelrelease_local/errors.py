"""
API errors rendered as Kubernetes ``Status`` objects, so that every client maps them to its own
exception types (``ApiException.status``, kopf's ``APIConflictError``, kubectl's messages).
"""
from typing import Any

import attrs
import kmock

from modelrelease_local.resources import ApiResource

__all__ = [
    'ApiError', 'already_exists', 'bad_request', 'conflict', 'error_for_code', 'forbidden_change',
    'gone', 'invalid', 'method_not_allowed', 'not_acceptable', 'not_found', 'status_body',
    'unsupported_media_type',
]

_REASONS = {
    400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed',
    406: 'NotAcceptable', 409: 'Conflict', 410: 'Expired', 415: 'UnsupportedMediaType', 422: 'Invalid',
    429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
}


@attrs.frozen
class ApiError(kmock.KubernetesError):
    """An expected API failure; ``status`` is the HTTP code, ``reason`` the Kubernetes reason."""


def status_body(error: kmock.KubernetesError) -> dict[str, Any]:
    body: dict[str, Any] = {
        'kind': 'Status',
        'apiVersion': 'v1',
        'metadata': {},
        'status': 'Failure',
        'message': error.message or '',
        'reason': error.reason or _REASONS.get(error.status, 'Unknown'),
        'code': error.status,
    }
    if error.details:
        body['details'] = error.details
    return body


def _qualified(resource: ApiResource) -> str:
    return f'{resource.plural}.{resource.group}' if resource.group else resource.plural


def _details(resource: ApiResource, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {'group': resource.group, 'kind': resource.plural}
    if name:
        details['name'] = name
    return details


def not_found(resource: ApiResource, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{_qualified(resource)} "{name}" not found', _details(resource, name))


def already_exists(resource: ApiResource, name: str) -> ApiError:
    return ApiError(409, 'AlreadyExists', f'{_qualified(resource)} "{name}" already exists',
                    _details(resource, name))


def conflict(resource: ApiResource, name: str, why: str | None = None) -> ApiError:
    why = why or 'the object has been modified; please apply your changes to the latest version and try again'
    return ApiError(409, 'Conflict', f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}',
                    _details(resource, name))


def invalid(resource: ApiResource, name: str | None, why: str) -> ApiError:
    return ApiError(422, 'Invalid', f'{resource.kind} "{name or ""}" is invalid: {why}', _details(resource, name))


def forbidden_change(resource: ApiResource, name: str, why: str) -> ApiError:
    return invalid(resource, name, f'Forbidden: {why}')


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message, None)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, 'MethodNotAllowed', message, None)


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, 'NotAcceptable', message, None)


def unsupported_media_type(content_type: str, why: str | None = None) -> ApiError:
    return ApiError(415, 'UnsupportedMediaType', why or (
        f'the body of the request was in an unknown format - accepted media types include:'
        f' application/json, application/yaml (got {content_type!r})'), None)


def gone(message: str) -> ApiError:
    return ApiError(410, 'Expired', message, None)


def error_for_code(code: int, message: str | None = None, reason: str | None = None) -> ApiError:
    reason = reason or _REASONS.get(code, 'Unknown')
    return ApiError(code, reason, message or f'injected failure: {reason}', None)
