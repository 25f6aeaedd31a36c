"""
An embedded Kubernetes API server: good enough for kopf, the kubernetes client and kubectl.

It serves plain HTTP on 127.0.0.1 without authentication. It runs either on the caller's event
loop (``async with EmbeddedApiServer() as server``) or on its own loop in a background thread
(``server.start()`` / ``server.stop()``, or ``with EmbeddedApiServer() as server``), the latter
for synchronous clients (the kubernetes client, kubectl) and for processes that host it.

Controllers (see :mod:`.controllers`) run as tasks on the same loop as the store.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import pathlib
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp.web
import yaml

from modelrelease_local.faults import Fault, FaultInjector
from modelrelease_local.persistence import ApiPersistence
from modelrelease_local.recording import RequestLog
from modelrelease_local.resources import ApiResource, ResourceRegistry
from modelrelease_local.routing import ApiRequestHandler
from modelrelease_local.store import ObjectStore

__all__ = ["BackgroundController", "EmbeddedApiServer"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BackgroundController(Protocol):
    """Anything that runs against the store on the server's loop until cancelled."""

    async def run(self, store: ObjectStore) -> None: ...


class EmbeddedApiServer:

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, context_name: str = "modelrelease-local",
                 auto_create_namespaces: bool = True, controllers: Iterable[BackgroundController] = (),
                 request_log_limit: int = 100_000, event_log_size: int = 1024,
                 state_file: str | pathlib.Path | None = None, faults: Mapping[str, Any] | None = None) -> None:
        """``state_file``: an SQLite file that keeps every object across restarts (see :mod:`.persistence`);
        without it the objects live in memory only. ``faults``: a fault plan to arm (see :mod:`.faults`)."""
        self.host = host
        self._requested_port = port
        self.context_name = context_name
        self.registry = ResourceRegistry()
        self.persistence = ApiPersistence(state_file) if state_file is not None else None
        self.store = ObjectStore(self.registry, auto_create_namespaces=auto_create_namespaces,
                                 event_log_size=event_log_size, persistence=self.persistence)
        self.requests = RequestLog(request_log_limit)
        self.faults = FaultInjector()
        if faults is not None:
            self.faults.load(faults)
        self._handler = ApiRequestHandler(store=self.store, registry=self.registry, log=self.requests,
                                          faults=self.faults)
        # The fault plan's clock (restarts, dropped watches) runs beside the controllers.
        self._controllers: list[BackgroundController] = [*controllers, self.faults]
        self._controller_tasks: list[asyncio.Task[None]] = []
        self._runner: aiohttp.web.ServerRunner | None = None
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # Addresses.

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The embedded API server is not started.")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("The embedded API server is not started.")
        return self._loop

    @property
    def handler(self) -> ApiRequestHandler:
        """The request handler, a :class:`kmock.KubernetesScaffold`: kmock reactions added to it
        (``server.handler["get /metrics"] << b"..."``) answer the URLs outside the resource endpoints."""
        return self._handler

    @property
    def running(self) -> bool:
        return self._runner is not None

    # The in-loop lifecycle.

    async def astart(self) -> Self:
        if self._runner is not None:
            raise RuntimeError("The embedded API server is already started.")
        self._loop = asyncio.get_running_loop()
        server = aiohttp.web.Server(self._handler, handler_cancellation=True, access_log=None)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self._requested_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._handler.host_port = f"{self.host}:{self._port}"
        for controller in self._controllers:
            self._launch(controller)
        logger.info("The embedded Kubernetes API server is serving at %s", self.url)
        return self

    async def astop(self) -> None:
        tasks, self._controller_tasks = self._controller_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            self.store.events.close_all()  # end the watch-streams, or the shutdown waits for them
            await self._runner.cleanup()
            self._runner = None
        if self.persistence is not None:
            self.persistence.close()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()

    def _launch(self, controller: BackgroundController) -> None:
        task = asyncio.get_running_loop().create_task(controller.run(self.store), name=f"controller {controller!r}")
        task.add_done_callback(self._report_controller_exit)
        self._controller_tasks.append(task)

    @staticmethod
    def _report_controller_exit(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("A controller has crashed: %s", task.get_name(), exc_info=task.exception())

    def attach(self, controller: BackgroundController) -> None:
        """Add a controller; it starts now if the server runs, or when the server starts."""
        self._controllers.append(controller)
        if self._loop is not None and self._runner is not None:
            self.call(self._launch, controller)

    # The threaded lifecycle.

    def start(self, timeout: float = 30.0) -> Self:
        """Serve from a background thread with its own event loop; return when it accepts requests."""
        if self._thread is not None:
            raise RuntimeError("The embedded API server is already started.")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(started,), daemon=True,
                                        name="embedded-kube-apiserver")
        self._thread.start()
        try:
            started.result(timeout=timeout)
        except BaseException:
            self._thread = None
            raise
        return self

    def _thread_main(self, started: concurrent.futures.Future[None]) -> None:
        async def serve() -> None:
            self._thread_stop = asyncio.Event()
            try:
                await self.astart()
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            try:
                await self._thread_stop.wait()
            finally:
                await self.astop()

        asyncio.run(serve())

    def stop(self, timeout: float = 30.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._thread_stop is not None:
            self._loop.call_soon_threadsafe(self._thread_stop.set)
        thread.join(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # Running code on the server's loop from other threads.

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run a synchronous function on the server's loop (e.g. a store operation) and return its result."""
        if self._in_loop_thread():
            return fn(*args)

        async def wrapper() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # Convenience access to the store (thread-safe).

    def resource(self, api_version: str, plural: str) -> ApiResource:
        group, _, version = api_version.rpartition("/")
        resource = self.call(self.registry.get, group, version, plural)
        if resource is None:
            raise LookupError(f"Unknown resource: {plural} in {api_version}")
        return resource

    def get_object(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        resource = self.resource(api_version, plural)
        return self.call(self.store.find, resource, namespace, name)

    def list_objects(self, api_version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        resource = self.resource(api_version, plural)
        return self.call(self.store.list_objects, resource, namespace)

    # Test hooks.

    def fail_next(self, method: str | None = None, path_suffix: str | None = None, *, status: int = 409,
                  times: int | None = 1, path_contains: str | None = None, path_regex: str | None = None,
                  reason: str | None = None, message: str | None = None, delay: float = 0.0,
                  retry_after: float | None = None, served: bool = False) -> Fault:
        """
        Answer the next ``times`` matching requests with an error ``status`` instead of serving them.

        E.g. ``server.fail_next('PATCH', '/status', status=409)``: the next status patch gets a 409 Conflict.
        ``times=None`` keeps failing until :meth:`clear_faults`. The returned fault counts its ``hits``.
        ``retry_after`` adds a Retry-After header; ``served`` carries the request out before failing it.
        """
        return self.faults.add(Fault(status=status, method=method, path_suffix=path_suffix, times=times,
                                     path_contains=path_contains, path_regex=path_regex, reason=reason,
                                     message=message, delay=delay, retry_after=retry_after, served=served))

    def clear_faults(self) -> None:
        self.faults.clear()

    # Client configuration.

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        name = self.context_name
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | pathlib.Path, namespace: str = "default") -> pathlib.Path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False), encoding="utf-8")
        return path


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted: ``python -m modelrelease_local.apiserver --port 6443 --kubeconfig kc``."""
    import argparse

    from modelrelease_local.controllers import ControllerEmulator

    parser = argparse.ArgumentParser(description="An embedded Kubernetes API server (plain HTTP, no auth).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=pathlib.Path, help="where to write a kubeconfig for it")
    parser.add_argument("--no-controllers", action="store_true", help="no emulated Job/Deployment controllers")
    parser.add_argument("--state-file", type=pathlib.Path, help="keep the objects in this SQLite file across restarts")
    parser.add_argument("--faults", type=pathlib.Path, help="a fault plan to inject (YAML or JSON, see faults.py)")
    args = parser.parse_args(argv)
    plan = yaml.safe_load(args.faults.read_text(encoding="utf-8")) if args.faults else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def serve() -> None:
        controllers = [] if args.no_controllers else [ControllerEmulator()]
        async with EmbeddedApiServer(host=args.host, port=args.port, controllers=controllers,
                                     state_file=args.state_file, faults=plan) as server:
            if args.kubeconfig:
                server.write_kubeconfig(args.kubeconfig)
            print(server.url, flush=True)  # for a parent process to read the address
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
