"""
Run each Deployment as real model-server processes on 127.0.0.1, one per replica.

For each generation of a Deployment, :class:`ProcessDeploymentRunner` makes the processes match
the spec: as many as ``replicas`` run the current pod template (its first container, as the
executor runs a trainer: see :mod:`.executor`), each on a free loopback port, with the template's
env and MODEL_PATH mapped to the local artifact directory. It reports ready once every one of them
answers its readiness probe (``/readyz``), then stops the processes of older templates. Unlike
the Deployment's ``maxSurge: 0`` it surges on a template change: new processes become ready before
old ones stop, so a track never drops to zero endpoints on this small machine.

The runner keeps the registry of ready endpoints, ``(namespace, release, track, version, model) -> ports``,
that Prometheus' targets and the traffic generator read; ``on_endpoints_changed`` is called (on the
API server's loop: it must not block) whenever that registry changes.

Fault injection, for demos and tests: pod template annotations ask the reference server to fail.
``local.modelrelease.io/inject-error-rate`` and ``local.modelrelease.io/inject-latency-ms`` become
the server's INJECT_ERROR_RATE and INJECT_LATENCY_MS, for the pods that match
``local.modelrelease.io/inject-into`` (``track=canary,stage=full``: every condition must hold;
``stage`` is read from the version label ``<stage>-<hash>``; absent: every pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from modelrelease_local import timestamps
from modelrelease_local.executor import exit_code_of, kill_group, local_command, process_environment
from modelrelease_local.outcomes import RolloutOutcome
from modelrelease_local.ports import free_port, port_is_free
from modelrelease_local.supervision import popen
from modelrelease_local.volumes import pod_path_map

__all__ = ["FAULT_ANNOTATIONS", "EndpointKey", "ProcessDeploymentRunner", "ServerProcess"]

logger = logging.getLogger(__name__)

FAULT_ANNOTATIONS = {"local.modelrelease.io/inject-error-rate": "INJECT_ERROR_RATE",
                     "local.modelrelease.io/inject-latency-ms": "INJECT_LATENCY_MS"}
FAULT_SELECTOR = "local.modelrelease.io/inject-into"
PROBE_INTERVAL = 0.2
STOP_GRACE = 5.0
DEFAULT_PROGRESS_DEADLINE = 600.0  # spec.progressDeadlineSeconds' default


@dataclasses.dataclass(frozen=True, order=True)
class EndpointKey:
    namespace: str
    release: str
    track: str
    version: str
    model: str = ""  # the served model's name (MODEL_NAME): the <name> in the server's URLs


@dataclasses.dataclass
class ServerProcess:
    """One replica: a server process, where it listens and what it serves."""

    name: str
    key: EndpointKey
    template_hash: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: pathlib.Path
    scratch: pathlib.Path
    probe_path: str = "/readyz"
    ready: bool = False
    owner: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The Deployment it is a replica of: namespace, name, uid."""
    pod_template: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    started_at: str = ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _endpoint_key(deployment: Mapping[str, Any]) -> EndpointKey:
    meta = deployment.get("metadata") or {}
    template_meta = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    labels = template_meta.get("labels") or {}
    annotations = template_meta.get("annotations") or {}
    env = {e.get("name"): e.get("value") for c in ((deployment.get("spec") or {}).get("template") or {}).get(
        "spec", {}).get("containers", [])[:1] for e in c.get("env") or []}
    version = annotations.get("modelrelease.io/version-id") or env.get("MODEL_VERSION") or ""
    return EndpointKey(meta.get("namespace") or "default", labels.get("modelrelease.io/release") or meta["name"],
                       labels.get("modelrelease.io/track") or env.get("RELEASE_TRACK") or "stable", version,
                       env.get("MODEL_NAME") or "model")


def fault_env(template: Mapping[str, Any]) -> dict[str, str]:
    """The INJECT_* variables this pod template's annotations ask for (see the module's docs)."""
    meta = template.get("metadata") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    wanted = {env: str(annotations[name]) for name, env in FAULT_ANNOTATIONS.items() if name in annotations}
    if not wanted:
        return {}
    facts = {"track": labels.get("modelrelease.io/track", ""),
             "stage": labels.get("modelrelease.io/version", "").rpartition("-")[0],
             "version": labels.get("modelrelease.io/version", "")}
    for condition in filter(None, (c.strip() for c in annotations.get(FAULT_SELECTOR, "").split(","))):
        name, _, value = condition.partition("=")
        if facts.get(name.strip()) != value.strip():
            return {}
    return wanted


def server_args(args: list[str], port: int) -> list[str]:
    """Listen on loopback at the given port, whatever the container asked for."""
    result: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--port", "--host"):
            skip = True
            continue
        if arg.startswith(("--port=", "--host=")):
            continue
        result.append(arg)
    return [*result, "--port", str(port), "--host", "127.0.0.1"]


async def http_ok(port: int, path: str, timeout: float = 2.0) -> bool:
    """A GET answered 200 (a readiness probe, as the kubelet's httpGet)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return status_line.split()[1:2] == [b"200"]


def _call_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("%r failed", callback)


class ProcessDeploymentRunner:
    """A :class:`~.outcomes.DeploymentRunner` that runs model servers as local processes."""

    def __init__(self, artifact_root: str | os.PathLike[str], python: str = sys.executable, *,
                 on_endpoints_changed: Callable[[], None] | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.artifact_root = pathlib.Path(artifact_root).resolve()
        self.python = python
        self.on_endpoints_changed = on_endpoints_changed
        self.on_servers_changed: list[Callable[[], None]] = []
        """Called when a server starts, becomes ready or stops (e.g. to mirror them as Pods)."""
        self.extra_env = dict(extra_env or {})
        self.log_dir = self.artifact_root / "logs"
        self._servers: dict[tuple[str, str], list[ServerProcess]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._ports_given: set[int] = set()
        self._counter = itertools.count(1)

    # What runs.

    def servers(self, namespace: str, name: str) -> list[ServerProcess]:
        return list(self._servers.get((namespace, name), []))

    def all_servers(self) -> list[ServerProcess]:
        return [server for servers in list(self._servers.values()) for server in servers]

    def endpoints(self) -> dict[EndpointKey, list[int]]:
        """The ports of ready, running servers, by (namespace, release, track, version)."""
        found: dict[EndpointKey, list[int]] = {}
        for servers in list(self._servers.values()):
            for server in list(servers):
                if server.ready and server.alive:
                    found.setdefault(server.key, []).append(server.port)
        return {key: sorted(ports) for key, ports in sorted(found.items())}

    def _changed(self) -> None:
        """The ready endpoints changed (and so did the servers)."""
        if self.on_endpoints_changed is not None:
            _call_safely(self.on_endpoints_changed)
        self._servers_changed()

    def _servers_changed(self) -> None:
        for callback in self.on_servers_changed:
            _call_safely(callback)

    # The DeploymentRunner protocol.

    async def rollout(self, deployment: Mapping[str, Any]) -> RolloutOutcome:
        meta = deployment["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        spec = deployment.get("spec") or {}
        template = spec.get("template") or {}
        wanted_hash = template_hash(template)
        replicas = int(spec.get("replicas", 1))
        deadline = time.monotonic() + float(spec.get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE)
        # A newer generation cancels this rollout; the next one waits here until this one let go.
        async with self._locks.setdefault(key, asyncio.Lock()):
            servers = self._servers.setdefault(key, [])
            await self._forget_dead(servers)
            current = [s for s in servers if s.template_hash == wanted_hash]
            for extra in sorted(current, key=lambda s: s.ready)[:max(0, len(current) - replicas)]:
                await self._stop(servers, extra)
            try:
                for _ in range(replicas - len(current)):
                    servers.append(self._start(deployment, wanted_hash))
            except OSError as exc:  # e.g. a command that does not exist on this machine
                return RolloutOutcome(False, "ProgressDeadlineExceeded", f"cannot start a server: {exc}")
            finally:
                if replicas > len(current):
                    self._servers_changed()
            failure = await self._wait_ready(servers, wanted_hash, deadline)
            if failure is not None:
                return RolloutOutcome(False, "ProgressDeadlineExceeded", failure)
            for old in [s for s in servers if s.template_hash != wanted_hash]:
                await self._stop(servers, old)
            return RolloutOutcome(ready=True)

    async def teardown(self, deployment: Mapping[str, Any]) -> None:
        meta = deployment["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        async with self._locks.setdefault(key, asyncio.Lock()):
            servers = self._servers.get(key, [])
            for server in list(servers):
                await self._stop(servers, server)
            self._servers.pop(key, None)

    def close(self) -> None:
        """Stop every server now (the stack's last word; no loop needed)."""
        everything = [server for servers in self._servers.values() for server in servers]
        self._servers.clear()
        for server in everything:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for server in everything:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(max(0.0, deadline - time.monotonic()))
            kill_group(server.process)
            shutil.rmtree(server.scratch, ignore_errors=True)
        if everything:
            self._changed()

    # Processes.

    def _free_port(self) -> int:
        while True:
            port = free_port()
            if port not in self._ports_given and port_is_free(port):
                self._ports_given.add(port)
                return port

    def _start(self, deployment: Mapping[str, Any], wanted_hash: str) -> ServerProcess:
        meta = deployment["metadata"]
        template = (deployment.get("spec") or {}).get("template") or {}
        pod_spec = template.get("spec") or {}
        container = (pod_spec.get("containers") or [{}])[0]
        name = f"{meta['name']}-{wanted_hash[:6]}-{next(self._counter)}"
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-"))
        paths = pod_path_map(pod_spec, container, self.artifact_root, scratch)
        port = self._free_port()
        command = local_command(container, self.python, paths.to_local)
        command = [command[0], *server_args(command[1:], port)]
        env = process_environment(container, paths, {**self.extra_env, **fault_env(template)})
        log_file = self.log_dir / f"{meta.get('namespace') or 'default'}_{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        probe = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path") or "/readyz"
        try:
            with log_file.open("ab") as log:
                # It dies with this process, whatever ends it (see supervision.popen).
                process = popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=scratch, start_new_session=True)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        logger.info("Started %s on 127.0.0.1:%d (pid %d, log %s)", name, port, process.pid, log_file)
        owner = {"namespace": meta.get("namespace") or "default", "name": meta["name"], "uid": meta.get("uid", "")}
        started_at = timestamps.now()
        return ServerProcess(name, _endpoint_key(deployment), wanted_hash, port, process, log_file, scratch, probe,
                             owner=owner, pod_template=template, started_at=started_at)

    async def _wait_ready(self, servers: list[ServerProcess], wanted_hash: str, deadline: float) -> str | None:
        """None once every server of this template is ready; else why not."""
        while True:
            pending = [s for s in servers if s.template_hash == wanted_hash and not s.ready]
            if not pending:
                return None
            for server in pending:
                if not server.alive:
                    code = exit_code_of(int(server.process.returncode))
                    tail = " | ".join(server.log_file.read_text(errors="replace").strip().splitlines()[-3:])
                    await self._stop(servers, server)
                    return f"server {server.name} exited with code {code} before it was ready: {tail}"
                if await http_ok(server.port, server.probe_path):
                    server.ready = True
                    self._changed()
            if time.monotonic() > deadline:
                return "the servers did not become ready within the progress deadline"
            await asyncio.sleep(PROBE_INTERVAL)

    async def _forget_dead(self, servers: list[ServerProcess]) -> None:
        for server in [s for s in servers if not s.alive]:
            logger.warning("Server %s had exited with code %s", server.name, server.process.returncode)
            await self._stop(servers, server)

    async def _stop(self, servers: list[ServerProcess], server: ServerProcess) -> None:
        """Out of the endpoints first (as a terminating pod), then SIGTERM, then SIGKILL after a grace."""
        with contextlib.suppress(ValueError):
            servers.remove(server)
        if server.ready:
            server.ready = False
            self._changed()
        try:
            if server.alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.process.pid, signal.SIGTERM)
                stop_by = time.monotonic() + STOP_GRACE
                while server.alive and time.monotonic() < stop_by:
                    await asyncio.sleep(0.05)
        finally:  # cancelled meanwhile or not, the process never outlives its record
            kill_group(server.process)
            self._ports_given.discard(server.port)
            shutil.rmtree(server.scratch, ignore_errors=True)
            self._servers_changed()
