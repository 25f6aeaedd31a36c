"""A pass-through HTTP proxy in front of the embedded API server, for one client: who sent what.

The embedded server's request log holds every client's requests without their headers, so the
operator's and a kubectl plugin's requests to the same release look alike there. A client whose
kubeconfig points here is served by the embedded server as usual (watch streams included), and each of
its requests is noted with its User-Agent, so the test can pick exactly those out of the server's log.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import pathlib
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp
import aiohttp.web
import yaml

from modelrelease_local.recording import RequestRecord

# Not forwarded: the connection's own headers, and lengths that aiohttp sets again for what it sends.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "host", "content-length"})


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    body: Any = None  # parsed JSON, as the server's log keeps it

    @property
    def key(self) -> tuple[str, str, str, str]:
        return _key(self.method, self.path, self.query, self.body)


def _key(method: str, path: str, query: dict[str, str], body: Any) -> tuple[str, str, str, str]:
    return method, path, json.dumps(query, sort_keys=True), json.dumps(body, sort_keys=True)


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def kubeconfig(self, original: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
        """A copy of ``original`` whose clusters are reached through this proxy."""
        config = yaml.safe_load(original.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    async def _forward(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        query = {key: request.query.getone(key) for key in request.query}
        body = await request.read()
        with self._lock:
            self._seen.append(Seen(request.method, request.path, query, request.headers.get("User-Agent", ""),
                                   json.loads(body) if body else None))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None) as upstream:
            response = aiohttp.web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():  # watch events as they come
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self._forward), shutdown_timeout=1.0)
        try:
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        except BaseException as exc:
            started.set_exception(exc)
            await self._session.close()
            return
        started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self._session.close()

    def __enter__(self) -> Self:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve(started))
            self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True, name="recording-proxy")
        self._thread.start()
        started.result(timeout=30)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)


def picked_from_the_log(log: Iterable[RequestRecord], seen: Iterable[Seen]) -> list[RequestRecord]:
    """The server's records of the requests in ``seen``, one per request; fails on any the log lacks.

    Requests are matched on method, path, query and body. Where another client sent the very same request
    (the operator also reads the release by name), either record may be taken: they need the same access.
    """
    wanted: collections.Counter[Any] = collections.Counter(s.key for s in seen)
    picked = []
    for record in log:
        key = _key(record.method, record.path, record.query, record.body)
        if wanted[key] > 0:
            wanted[key] -= 1
            picked.append(record)
    missing = +wanted
    assert not missing, f"requests that went through the proxy but are not in the server's log: {missing}"
    return picked
