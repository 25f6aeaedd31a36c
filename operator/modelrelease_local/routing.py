"""
The HTTP face of the embedded API server, built on kmock's :class:`kmock.KubernetesScaffold`.

kmock carries the non-resource endpoints: its fallback reactions route ``/``, ``/version``, ``/api``,
``/apis``, the group and version documents (filled here from our registry, since kmock's own versions
of those documents are wrong for kubectl), health and OpenAPI endpoints (registered here as kmock
reactions), the "no such endpoint" 404, and the rendering of watch-streams as JSON lines.

The resource endpoints are served here directly, not through kmock's request parser and reactions:
kmock's ``Request._parse`` fails on ``/api/v1/namespaces`` (500) and on binary bodies, misreads
``/api/v1/namespaces/NAME[/status]``, and every kmock reaction keeps every request it served forever.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp.web
import attrs
import kmock
import multidict
import yaml

from modelrelease_local import errors, openapi, paging, protobuf, tables
from modelrelease_local.faults import Fault, FaultInjector, error_response, error_status
from modelrelease_local.patching import PatchType
from modelrelease_local.recording import RequestLog, RequestRecord
from modelrelease_local.resources import ApiResource, ResourceRegistry
from modelrelease_local.schema import FieldValidation
from modelrelease_local.selectors import FieldSelector, LabelSelector, SelectorError
from modelrelease_local.store import ObjectStore
from modelrelease_local.watching import Watcher

__all__ = ["SERVER_VERSION", "ApiRequestHandler"]

logger = logging.getLogger(__name__)

# Helm checks a chart's kubeVersion against gitVersion as semver: no "_" in the build metadata.
SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0+modelrelease-local", "gitCommit": "embedded",
    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "n/a", "compiler": "n/a",
    "platform": "linux/amd64",
}
_JSON_TYPES = {"application/json", PatchType.MERGE, PatchType.JSON, PatchType.STRATEGIC}
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", PatchType.APPLY}
_HEALTH = ("healthz", "livez", "readyz")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _warning_header(text: str) -> str:
    # RFC 7234's warn-text, as the API server writes it: code 299, no agent, a quoted string.
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json(data: Any, status: int = 200, warnings: Sequence[str] = ()) -> aiohttp.web.Response:
    headers = multidict.CIMultiDict(("Warning", _warning_header(text)) for text in warnings)
    return aiohttp.web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json",
                                headers=headers)


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; Go's, which the real API server uses, refuses them.
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _decode(raw: bytes, content_type: str | None) -> Any:
    if not raw:
        return None
    media = _media_type(content_type)
    try:
        if media in _JSON_TYPES or media == "":
            return json.loads(raw, parse_constant=_refuse_constant)
        if media in _YAML_TYPES:
            return yaml.safe_load(raw)
        if media == "application/vnd.kubernetes.protobuf":
            return protobuf.decode_object(raw)
    except protobuf.ProtobufError as exc:
        raise errors.unsupported_media_type(media, str(exc)) from None
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"the request body cannot be decoded: {exc}") from None
    raise errors.unsupported_media_type(media)


class _Route:
    """A parsed resource URL: /api/v1/[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]] or /apis/G/V/…"""

    def __init__(self, group: str, version: str, parts: list[str]) -> None:
        self.group, self.version = group, version
        self.namespace: str | None = None
        # "namespaces/X/status" is a subresource of a namespace, "namespaces/X/pods" is a scope.
        namespace_subresource = len(parts) == 3 and parts[2] in ("status", "finalize")
        if parts[:1] == ["namespaces"] and len(parts) >= 3 and not namespace_subresource:
            self.namespace, parts = parts[1], parts[2:]
        self.plural = parts[0]
        self.name = parts[1] if len(parts) > 1 else None
        self.subresource = "/".join(parts[2:]) or None

    @classmethod
    def parse(cls, parts: list[str]) -> _Route | None:
        if parts[0] == "api" and len(parts) >= 3:
            return cls("", parts[1], parts[2:])
        if parts[0] == "apis" and len(parts) >= 4:
            return cls(parts[1], parts[2], parts[3:])
        return None


@attrs.define(kw_only=True, eq=False)
class ApiRequestHandler(kmock.KubernetesScaffold):
    """The low-level aiohttp handler (``aiohttp.web.Server(handler)``): no app, no router."""

    store: ObjectStore
    registry: ResourceRegistry
    log: RequestLog
    faults: FaultInjector
    host_port: str = ""
    pages: paging.ListPager = attrs.field(factory=paging.ListPager)  # snapshots behind LIST continue tokens

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # kmock's discovery reactions and its "no such endpoint" fallback
        for name in _HEALTH:
            self.fallback[f"get /{name}"] << b"ok"
        self.fallback["get", re.compile(rf"/({'|'.join(_HEALTH)})/.+")] << b"ok"
        self.fallback["get /openapi/v3"] << self._serve_openapi_index
        self.fallback["get", re.compile(r"/openapi/v3/.+")] << self._serve_openapi_document

    async def __call__(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        raw = await request.read()
        query = {key: request.query.getone(key) for key in request.query}
        content_type = request.headers.get("Content-Type")
        record_base: dict[str, Any] = dict(method=request.method, path=request.path, query=query,
                                           content_type=content_type)
        body: Any = None
        try:
            body = _decode(raw, content_type)
            fault = self.faults.take(request.method, request.path, query)
            if fault is not None:
                record_base["injected"] = True
                response = await self._answer_fault(fault, request, query, raw, body, record_base)
            else:
                response = await self._dispatch(request, query, raw, body, record_base)
        except Exception as exc:
            if not isinstance(exc, kmock.KubernetesError):
                logger.exception("The embedded API server failed on %s %s", request.method, request.path_qs)
            response = await self._render_error(exc)
        if not response.prepared:  # watch-streams are recorded when they start, not when they end
            self.log.append(RequestRecord(**record_base, status=response.status, body=body))
        return response

    async def _answer_fault(self, fault: Fault, request: aiohttp.web.BaseRequest, query: dict[str, str], raw: bytes,
                            body: Any, record_base: dict[str, Any]) -> aiohttp.web.StreamResponse:
        """A slow answer (no status), or the error instead of the answer (``served``: after carrying it out)."""
        watching = request.method == "GET" and query.get("watch") in ("true", "1")
        if fault.status is not None and fault.served and not watching:  # carried out and kept; its answer is lost
            await self._dispatch(request, query, raw, body, record_base)
        await asyncio.sleep(fault.delay)
        if fault.status is None:  # a slow answer: late, but served
            return await self._dispatch(request, query, raw, body, record_base)
        if fault.status == 410 and watching:  # inside the stream, as a real server reports it
            stream = self._events(record_base, None, [{"type": "ERROR", "object": error_status(fault)}])
            return await kmock.Response(status=200, headers={"Content-Type": "application/json"}, payload=stream)(
                self._kmock_request(request, query, raw, body))
        return error_response(fault)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock's rendering adds a Python traceback as the details and kmock's own reasons; ours is the API's.
        error = exc if isinstance(exc, kmock.KubernetesError) else errors.error_for_code(500, repr(exc))
        return _json(errors.status_body(error), error.status)

    @staticmethod
    def _kmock_request(request: aiohttp.web.BaseRequest, query: Mapping[str, str], raw: bytes, body: Any,
                       route: _Route | None = None) -> kmock.Request:
        path = request.path.rstrip("/") or "/"
        return kmock.Request(
            method=request.method, url=request.url.with_path(path), params=dict(query),
            headers=dict(request.headers), body=raw, data=body, raw_request=request,
            resource=None if route is None else kmock.resource(route.group, route.version, route.plural),
            namespace=None if route is None else route.namespace, name=None if route is None else route.name,
            subresource=None if route is None else route.subresource,
        )

    async def _dispatch(self, request: aiohttp.web.BaseRequest, query: dict[str, str], raw: bytes, body: Any,
                        record_base: Mapping[str, Any]) -> aiohttp.web.StreamResponse:
        parts = (request.path.rstrip("/") or "/").strip("/").split("/")
        route = _Route.parse(parts)
        if route is None:  # discovery and other non-resource endpoints: kmock's reactions
            # As kmock's own RawHandler.__call__ does: its reactions match only the requests the root has seen.
            # (So kmock keeps these: a few per client start, as clients cache discovery.)
            kmock_request = self._kmock_request(request, query, raw, body)
            self._requests.append(kmock_request)
            return await self._handle(kmock_request)
        return await self._serve(request, query, raw, body, record_base, route)

    # Discovery: kmock's reactions, our documents.

    def _get_resources(self) -> list[kmock.resource]:
        return [kmock.resource(res.group, res.version, res.plural) for res in self.registry]

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return SERVER_VERSION

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        # kmock's lacks serverAddressByClientCIDRs, which the kubernetes client's V1APIVersions requires.
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.host_port}]}

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        # kmock's picks an arbitrary preferred version; the registry orders them as Kubernetes does.
        return self.registry.api_group_list()

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        document = self.registry.api_group(request.url.path.split("/")[2])
        if document is None:
            raise errors.resource_not_found()
        return document

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        # kmock's says groupVersion "/v1" for the core group and gives subresources their parents' verbs.
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        document = self.registry.api_resource_list(group, version)
        if document is None:
            raise errors.resource_not_found()
        return document

    async def _serve_openapi_index(self, request: kmock.Request) -> kmock.Payload:
        return openapi.openapi_v3_index(self.registry)

    async def _serve_openapi_document(self, request: kmock.Request) -> kmock.Payload:
        prefix = request.url.path.strip("/").split("/")[2:]
        group_version = (["", prefix[1]] if prefix[:1] == ["api"] and len(prefix) == 2 else
                         prefix[1:] if prefix[:1] == ["apis"] and len(prefix) == 3 else None)
        spec = openapi.openapi_v3_document(self.registry, *group_version) if group_version else None
        if spec is None:
            raise errors.endpoint_not_found()
        return spec

    # The resource endpoints.

    async def _serve(self, request: aiohttp.web.BaseRequest, query: dict[str, str], raw: bytes, body: Any,
                     record_base: Mapping[str, Any], route: _Route) -> aiohttp.web.StreamResponse:
        resource = self.registry.get(route.group, route.version, route.plural)
        if resource is None or (route.namespace is not None and not resource.namespaced):
            raise errors.resource_not_found()
        if route.subresource is not None and route.subresource not in resource.subresources:
            raise errors.resource_not_found(route.subresource)
        namespace = route.namespace if resource.namespaced else None
        dry_run = "All" in request.query.getall("dryRun", [])
        method, name = request.method, route.name
        try:
            labels = LabelSelector.parse(query.get("labelSelector"))
            fields = FieldSelector.parse(query.get("fieldSelector")).for_resource(resource)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from None

        if method == "GET" and query.get("watch") in ("true", "1"):
            if name is not None:
                fields = FieldSelector.parse(",".join(filter(None, [fields.text, f"metadata.name={name}"]))
                                             ).for_resource(resource)
            stream = self._watch(request, query, record_base, resource, namespace, labels, fields)
            return await kmock.Response(status=200, headers={"Content-Type": "application/json"}, payload=stream)(
                self._kmock_request(request, query, raw, body, route))
        if method == "GET" and name is None:
            page = self.pages.page(
                lambda: self.store.iter_stored(resource, namespace), self.store.resource_version,
                limit=paging.parse_limit(query.get("limit")), continue_token=query.get("continue"),
                matches=lambda obj: labels.matches(obj) and fields.matches(obj),
                counted=not labels.text and fields.empty)
            items = [self.store.render(resource, obj) for obj in page.items]
            return self._objects_response(request, query, resource, items, page=page)
        if method == "GET" and name is not None and route.subresource == "scale":
            return _json(self.store.scale_of(resource, self.store.get(resource, namespace, name)))
        if method == "GET" and name is not None:
            return self._objects_response(request, query, resource, [self.store.get(resource, namespace, name)])
        if method == "POST" and name is None:
            validation = FieldValidation.from_query(query.get("fieldValidation"), "CreateOptions")
            created = self.store.create(resource, namespace, body, dry_run=dry_run, validation=validation)
            return _json(created, 201, validation.warnings)
        if method == "PUT" and name is not None:
            validation = FieldValidation.from_query(query.get("fieldValidation"), "UpdateOptions")
            replaced = self.store.replace(resource, namespace, name, body, subresource=route.subresource,
                                          dry_run=dry_run, validation=validation)
            return _json(replaced, warnings=validation.warnings)
        if method == "PATCH" and name is not None:
            patch_type = _media_type(request.headers.get("Content-Type"))
            if patch_type not in PatchType.ALL:
                raise errors.unsupported_media_type(patch_type)
            validation = FieldValidation.from_query(query.get("fieldValidation"), "PatchOptions")
            patched = self.store.patch(resource, namespace, name, patch_type, body, subresource=route.subresource,
                                       dry_run=dry_run, validation=validation)
            return _json(patched, warnings=validation.warnings)
        if method == "DELETE":
            options = dict(body or {})
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            if name is None:
                deleted = self.store.delete_collection(resource, namespace, labels, fields, options, dry_run=dry_run)
                return _json(self._list_body(resource, deleted))
            return _json(self.store.delete(resource, namespace, name, options, dry_run=dry_run))
        raise errors.method_not_allowed(f"the server does not allow this method on the requested resource"
                                        f" ({method} {request.path})")

    def _list_body(self, resource: ApiResource, items: list[dict[str, Any]],
                   page: paging.ListPage | None = None) -> dict[str, Any]:
        return {
            "kind": resource.list_kind,
            "apiVersion": resource.api_version,
            "metadata": self._list_meta(page),
            "items": items,
        }

    def _list_meta(self, page: paging.ListPage | None) -> dict[str, Any]:
        if page is None:
            return {"resourceVersion": self.store.resource_version}
        meta: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_token is not None:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        return meta

    def _objects_response(self, request: aiohttp.web.BaseRequest, query: dict[str, str], resource: ApiResource,
                          items: list[dict[str, Any]], *, page: paging.ListPage | None = None
                          ) -> aiohttp.web.StreamResponse:
        """One object, or (with ``page``) a list: as JSON, or as the Table kubectl asks for."""
        accept = request.headers.get("Accept", "")
        if tables.wants_table(accept):
            table = tables.render_table(resource, items, include_object=query.get("includeObject"),
                                        resource_version=self.store.resource_version)
            if page is not None:  # a Table's metadata is a ListMeta: kubectl pages through it
                table["metadata"] = self._list_meta(page)
            return _json(table)
        if "json" not in accept and "*/*" not in accept and accept:
            raise errors.not_acceptable(f"only application/json is served, not {accept!r}")
        return _json(self._list_body(resource, items, page) if page is not None else items[0])

    def _watch(self, request: aiohttp.web.BaseRequest, query: dict[str, str], record_base: Mapping[str, Any],
               resource: ApiResource, namespace: str | None, labels: LabelSelector,
               fields: FieldSelector) -> AsyncIterator[kmock.Payload]:
        """Start a watch now (its contents are fixed here, synchronously); kmock streams its events."""
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from None
        initial_events = query.get("sendInitialEvents") == "true"
        try:
            watcher = self.store.watch(
                resource, namespace, labels=labels, fields=fields,
                since=None if initial_events else query.get("resourceVersion"),
                initial_events_bookmark=initial_events and query.get("allowWatchBookmarks") == "true")
        except errors.ApiError as exc:
            if exc.status != 410:
                raise
            # An expired resourceVersion is reported inside the stream, as clients expect it.
            return self._events(record_base, None, [{"type": "ERROR", "object": errors.status_body(exc)}])
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        as_table = tables.wants_table(request.headers.get("Accept"))

        def render(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
            if as_table and kind != "BOOKMARK":
                # `kubectl get -w` asks for rows: each event carries a one-row Table.
                version = (obj.get("metadata") or {}).get("resourceVersion", "")
                obj = tables.render_table(resource, [obj], include_object=query.get("includeObject"),
                                          resource_version=version)
            return {"type": kind, "object": obj}

        return self._events(record_base, watcher, [], render, deadline, resource.plural)

    async def _events(self, record_base: Mapping[str, Any], watcher: Watcher | None, first: list[dict[str, Any]],
                      render: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
                      deadline: float | None = None, plural: str | None = None) -> AsyncIterator[kmock.Payload]:
        opened = self.faults.open_watch(plural, watcher.close) if watcher is not None else None  # faults may end it
        try:
            yield b""  # kmock sends the headers with the first chunk: send them now, even if nothing happens
            self.log.append(RequestRecord(**record_base, status=200))
            for event in first:
                yield event
            while watcher is not None and render is not None:
                try:
                    # The deadline bounds each wait for an event, never the writes between them.
                    async with asyncio.timeout_at(deadline):
                        kind, obj = await anext(watcher)
                except (TimeoutError, StopAsyncIteration):
                    if opened is not None and opened.error is not None:
                        yield opened.error
                    return
                yield render(kind, obj)
        finally:
            if opened is not None:
                self.faults.closed_watch(opened)
            if watcher is not None:
                watcher.close()
