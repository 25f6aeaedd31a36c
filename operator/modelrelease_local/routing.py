"""
The HTTP face of the embedded API server: URL parsing, content negotiation, discovery,
the verbs of the resource endpoints, watch-streams, the request log and injected faults.
"""
import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import yaml

from modelrelease_local import errors, openapi, protobuf, tables
from modelrelease_local.patching import PatchType
from modelrelease_local.recording import FaultInjector, RequestLog, RequestRecord
from modelrelease_local.resources import ApiResource, ResourceRegistry
from modelrelease_local.selectors import FieldSelector, LabelSelector, SelectorError
from modelrelease_local.store import ObjectStore

__all__ = ['SERVER_VERSION', 'ApiRequestHandler']

logger = logging.getLogger(__name__)

SERVER_VERSION = {
    'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0+modelrelease_local', 'gitCommit': 'embedded',
    'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z', 'goVersion': 'n/a', 'compiler': 'n/a',
    'platform': 'linux/amd64',
}
_JSON_TYPES = {'application/json', PatchType.MERGE, PatchType.JSON, PatchType.STRATEGIC}
_YAML_TYPES = {'application/yaml', 'application/x-yaml', 'text/yaml', PatchType.APPLY}


def _media_type(content_type: str | None) -> str:
    return (content_type or '').split(';')[0].strip().lower()


def _json(data: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(data).encode(), status=status, content_type='application/json')


class _Route:
    """A parsed resource URL: /api/v1/[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]] or /apis/G/V/…"""

    def __init__(self, group: str, version: str, parts: list[str]) -> None:
        self.group, self.version = group, version
        self.namespace: str | None = None
        # "namespaces/X/status" is a subresource of a namespace, "namespaces/X/pods" is a scope.
        namespace_subresource = len(parts) == 3 and parts[2] in ('status', 'finalize')
        if parts[:1] == ['namespaces'] and len(parts) >= 3 and not namespace_subresource:
            self.namespace, parts = parts[1], parts[2:]
        self.plural = parts[0]
        self.name = parts[1] if len(parts) > 1 else None
        self.subresource = '/'.join(parts[2:]) or None


class ApiRequestHandler:
    """The low-level aiohttp handler (``aiohttp.web.Server(handler)``): no app, no router."""

    def __init__(self, store: ObjectStore, registry: ResourceRegistry, requests: RequestLog,
                 faults: FaultInjector) -> None:
        self.store = store
        self.registry = registry
        self.requests = requests
        self.faults = faults
        self.host_port = ''

    async def __call__(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        raw = await request.read()
        query = {key: request.query.getone(key) for key in request.query}
        content_type = request.headers.get('Content-Type')
        body: Any = None
        record_base: dict[str, Any] = dict(method=request.method, path=request.path, query=query,
                                           content_type=content_type)
        injected = False
        try:
            body = self._decode(raw, content_type)
            fault = self.faults.take(request.method, request.path, query)
            if fault is not None:
                injected = True
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                raise errors.error_for_code(fault.status, fault.message, fault.reason)
            response = await self._dispatch(request, query, body, record_base)
        except errors.ApiError as exc:
            response = _json(errors.status_body(exc), exc.status)
        except Exception as exc:
            logger.exception('The embedded API server failed on %s %s', request.method, request.path_qs)
            response = _json(errors.status_body(errors.error_for_code(500, repr(exc))), 500)
        if not response.prepared:  # watch-streams are recorded when they start, not when they end
            self.requests.append(RequestRecord(**record_base, status=response.status, body=body, injected=injected))
        return response

    @staticmethod
    def _decode(raw: bytes, content_type: str | None) -> Any:
        if not raw:
            return None
        media = _media_type(content_type)
        try:
            if media in _JSON_TYPES or media == '':
                return json.loads(raw)
            if media in _YAML_TYPES:
                return yaml.safe_load(raw)
            if media == 'application/vnd.kubernetes.protobuf':
                return protobuf.decode_object(raw)
        except protobuf.ProtobufError as exc:
            raise errors.unsupported_media_type(media, str(exc)) from None
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f'the request body cannot be decoded: {exc}') from None
        raise errors.unsupported_media_type(media)

    async def _dispatch(self, request: aiohttp.web.BaseRequest, query: dict[str, str], body: Any,
                        record_base: Mapping[str, Any]) -> aiohttp.web.StreamResponse:
        path = request.path.rstrip('/') or '/'
        parts = path.strip('/').split('/')
        if request.method == 'GET':
            discovery = self._discovery(path, parts)
            if discovery is not None:
                return discovery
        if parts[0] == 'api' and len(parts) >= 3 and parts[1] == 'v1':
            return await self._serve(request, query, body, record_base, _Route('', parts[1], parts[2:]))
        if parts[0] == 'apis' and len(parts) >= 4:
            return await self._serve(request, query, body, record_base, _Route(parts[1], parts[2], parts[3:]))
        raise errors.ApiError(404, 'NotFound', 'the server could not find the requested resource', None)

    def _discovery(self, path: str, parts: list[str]) -> aiohttp.web.StreamResponse | None:
        if path in ('/healthz', '/readyz', '/livez') or path.startswith(('/healthz/', '/readyz/', '/livez/')):
            return aiohttp.web.Response(text='ok')
        if path == '/version':
            return _json(SERVER_VERSION)
        if path == '/':
            groups = sorted(f'/apis/{group}' for group in self.registry.groups() if group)
            return _json({'paths': ['/api', '/api/v1', '/apis', '/healthz', '/livez', '/readyz', '/version', *groups]})
        if path == '/api':
            return _json({'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                {'clientCIDR': '0.0.0.0/0', 'serverAddress': self.host_port}]})
        if path == '/apis':
            return _json(self.registry.api_group_list())
        if path == '/openapi/v3':
            return _json(openapi.openapi_v3_index(self.registry))
        if path.startswith('/openapi/v3/'):
            prefix = parts[2:]
            group_version = (['', prefix[1]] if prefix[:1] == ['api'] and len(prefix) == 2 else
                             prefix[1:] if prefix[:1] == ['apis'] and len(prefix) == 3 else None)
            spec = openapi.openapi_v3_document(self.registry, *group_version) if group_version else None
            if spec is None:
                raise errors.ApiError(404, 'NotFound', 'the server could not find the requested resource', None)
            return _json(spec)
        document: dict[str, Any] | None = None
        if parts[0] == 'api' and len(parts) == 2:
            document = self.registry.api_resource_list('', parts[1])
        elif parts[0] == 'apis' and len(parts) == 2:
            document = self.registry.api_group(parts[1])
        elif parts[0] == 'apis' and len(parts) == 3:
            document = self.registry.api_resource_list(parts[1], parts[2])
        else:
            return None
        if document is None:
            raise errors.ApiError(404, 'NotFound', 'the server could not find the requested resource', None)
        return _json(document)

    async def _serve(self, request: aiohttp.web.BaseRequest, query: dict[str, str], body: Any,
                     record_base: Mapping[str, Any], route: _Route) -> aiohttp.web.StreamResponse:
        resource = self.registry.get(route.group, route.version, route.plural)
        if resource is None or (route.namespace is not None and not resource.namespaced):
            raise errors.ApiError(404, 'NotFound', 'the server could not find the requested resource', None)
        if route.subresource is not None and route.subresource not in resource.subresources:
            raise errors.ApiError(404, 'NotFound', f'the server could not find the requested resource'
                                  f' ({route.subresource})', None)
        namespace = route.namespace if resource.namespaced else None
        dry_run = 'All' in request.query.getall('dryRun', [])
        method, name = request.method, route.name
        try:
            labels = LabelSelector.parse(query.get('labelSelector'))
            fields = FieldSelector.parse(query.get('fieldSelector'))
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None

        if method == 'GET' and query.get('watch') in ('true', '1'):
            if name is not None:
                fields = FieldSelector.parse(','.join(filter(None, [fields.text, f'metadata.name={name}'])))
            return await self._watch(request, query, record_base, resource, namespace, labels, fields)
        if method == 'GET' and name is None:
            items = self.store.list_objects(resource, namespace, labels, fields)
            return self._objects_response(request, query, resource, items, as_list=True)
        if method == 'GET' and name is not None and route.subresource == 'scale':
            return _json(self.store.scale_of(resource, self.store.get(resource, namespace, name)))
        if method == 'GET' and name is not None:
            return self._objects_response(request, query, resource, [self.store.get(resource, namespace, name)])
        if method == 'POST' and name is None:
            return _json(self.store.create(resource, namespace, body, dry_run=dry_run), 201)
        if method == 'PUT' and name is not None:
            return _json(self.store.replace(resource, namespace, name, body, subresource=route.subresource,
                                            dry_run=dry_run))
        if method == 'PATCH' and name is not None:
            patch_type = _media_type(request.headers.get('Content-Type'))
            if patch_type not in PatchType.ALL:
                raise errors.unsupported_media_type(patch_type)
            return _json(self.store.patch(resource, namespace, name, patch_type, body,
                                          subresource=route.subresource, dry_run=dry_run))
        if method == 'DELETE':
            options = dict(body or {})
            if 'propagationPolicy' in query:
                options['propagationPolicy'] = query['propagationPolicy']
            if name is None:
                deleted = self.store.delete_collection(resource, namespace, labels, fields, options, dry_run=dry_run)
                return _json(self._list_body(resource, deleted))
            return _json(self.store.delete(resource, namespace, name, options, dry_run=dry_run))
        raise errors.method_not_allowed(f'the server does not allow this method on the requested resource'
                                        f' ({method} {request.path})')

    def _list_body(self, resource: ApiResource, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            'kind': resource.list_kind,
            'apiVersion': resource.api_version,
            'metadata': {'resourceVersion': self.store.resource_version},
            'items': items,
        }

    def _objects_response(self, request: aiohttp.web.BaseRequest, query: dict[str, str], resource: ApiResource,
                          items: list[dict[str, Any]], *, as_list: bool = False) -> aiohttp.web.StreamResponse:
        accept = request.headers.get('Accept', '')
        if tables.wants_table(accept):
            return _json(tables.render_table(resource, items, include_object=query.get('includeObject'),
                                             resource_version=self.store.resource_version))
        if 'json' not in accept and '*/*' not in accept and accept:
            raise errors.not_acceptable(f'only application/json is served, not {accept!r}')
        return _json(self._list_body(resource, items) if as_list else items[0])

    async def _watch(self, request: aiohttp.web.BaseRequest, query: dict[str, str], record_base: Mapping[str, Any],
                     resource: ApiResource, namespace: str | None, labels: LabelSelector,
                     fields: FieldSelector) -> aiohttp.web.StreamResponse:
        initial_events = query.get('sendInitialEvents') == 'true'
        try:
            timeout = float(query['timeoutSeconds']) if query.get('timeoutSeconds') else None
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from None
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(
                resource, namespace, labels=labels, fields=fields,
                since=None if initial_events else query.get('resourceVersion'),
                initial_events_bookmark=initial_events and query.get('allowWatchBookmarks') == 'true')
        except errors.ApiError as exc:
            if exc.status != 410:
                raise
            # An expired resourceVersion is reported inside the stream, as clients expect it.
            await response.prepare(request)
            self.requests.append(RequestRecord(**record_base, status=200))
            await response.write(json.dumps({'type': 'ERROR', 'object': errors.status_body(exc)}).encode() + b'\n')
            return response
        try:
            await response.prepare(request)
            self.requests.append(RequestRecord(**record_base, status=200))
            async with asyncio.timeout(timeout):
                as_table = tables.wants_table(request.headers.get('Accept'))
                async for kind, obj in watcher:
                    if as_table and kind != 'BOOKMARK':
                        # `kubectl get -w` asks for rows: each event carries a one-row Table.
                        version = (obj.get('metadata') or {}).get('resourceVersion', '')
                        obj = tables.render_table(resource, [obj], include_object=query.get('includeObject'),
                                                  resource_version=version)
                    await response.write(json.dumps({'type': kind, 'object': obj}).encode() + b'\n')
        except (TimeoutError, ConnectionError):
            pass
        finally:
            watcher.close()
        return response
