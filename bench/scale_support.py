"""Helpers of bench/scale.py: the emulator process, the processes' lifecycle, specs and figures.

Run as a script it is the emulator process: the embedded API server with the scripted Job and
Deployment controllers (the operator tests' TrainingScript and ScriptedRollout), a compact request
log (no bodies kept), and a control port on 127.0.0.1 that the benchmark uses to create releases and
read the log and the releases' phases directly from the store, so its own calls never show up among
the operator's requests. It prints "READY <api url> <control url>" once both serve.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests/operator/fakes.py

GROUP, VERSION, PLURAL, NAMESPACE = "modelrelease.io", "v1alpha1", "modelreleases", "default"
KINDS = ("modelreleases", "jobs", "pods", "deployments", "services")
RELEASE_NAME = re.compile(r"\b([sp]\d{5})\b")  # s00012: settled, p00012: progressing
STEP_SECONDS = 2


# Specs.

def _base(stages: list[dict[str, Any]], analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "digits", "storage": {"hostPath": {"path": "/srv/models"}}},
                            "training": {"backoffLimit": 0}, "stages": stages, "serving": {"replicas": 4}}
    if analysis:
        spec["analysis"] = analysis
    return spec


def settled_spec() -> dict[str, Any]:
    """One stage, one step at weight 100, no checks: trains once, becomes stable at once (FirstRelease)."""
    return _base([{"name": "only", "training": {"data": "sklearn:digits"}, "steps": [{"weight": 100}]}])


def progressing_spec(prometheus_url: str) -> dict[str, Any]:
    """Stage 1 becomes stable directly (no stable to canary against); stage 2 canaries in 5 steps of
    2 s with an analysis run every second (the operator tests' checks)."""
    from tests.operator.conftest import release_spec  # the operator tests' checks, one home

    steps = [{"weight": w, "duration": f"{STEP_SECONDS}s"} for w in (10, 25, 50, 75, 100)]
    return _base([{"name": "first", "training": {"data": "sklearn:digits?fraction=0.3"}, "steps": [{"weight": 100}]},
                  {"name": "second", "training": {"data": "sklearn:digits"}, "steps": steps}],
                 release_spec(prometheus_url)["analysis"])


# The emulator process.

def _plural(path: str) -> str:
    parts = path.strip("/").split("/")
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    return parts[0] if parts else "?"


def category(method: str, path: str) -> str:
    plural = _plural(path)
    if method == "POST" and plural == "events":
        return "event"
    if method == "PATCH" and plural == PLURAL and path.endswith("/status"):
        return "status"
    if method == "PATCH" and plural == "deployments":
        return "deployment"
    return f"{method} {plural}"


class Recorder:
    """Stands in for RequestLog.append: keeps one small row per request, with what the figures need."""

    def __init__(self) -> None:
        self.rows: collections.deque[list[Any]] = collections.deque(maxlen=3_000_000)

    def append(self, record: Any) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        found = RELEASE_NAME.search(record.path) or RELEASE_NAME.search(
            str((body.get("involvedObject") or {}).get("name") or (body.get("metadata") or {}).get("name") or ""))
        kind = category(record.method, record.path)
        step = None
        if kind == "status" and record.status < 300:
            status = body.get("status") or {}
            step = [status.get(k) for k in ("phase", "stageIndex", "stepIndex", "stepStartedAt")]
        self.rows.append([record.timestamp, record.method, kind, record.status, record.is_watch,
                          found.group(1) if found else None, step, body.get("reason") if kind == "event" else None,
                          json.dumps(record.body)[:400] if record.status >= 400 else None])


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web
    from tests.operator.fakes import TrainingScript

    from modelrelease.api.crd import build_crd
    from modelrelease_local.apiserver import EmbeddedApiServer
    from modelrelease_local.controllers import ControllerEmulator
    from modelrelease_local.outcomes import ScriptedExecutor, ScriptedRollout

    training = TrainingScript()
    training.delay = args.training_delay
    server = EmbeddedApiServer(controllers=[ControllerEmulator(ScriptedExecutor(training),
                                                               ScriptedRollout(ready_delay=0.1),
                                                               job_backoff_scale=0.0)],
                               event_log_size=200_000)
    recorder = Recorder()
    server.requests.append = recorder.append  # type: ignore[method-assign]  # a compact log instead
    async with server:
        server.write_kubeconfig(args.kubeconfig)
        crds = server.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        server.store.create(crds, None, build_crd())

        def releases() -> Any:
            return server.registry.get(GROUP, VERSION, PLURAL)

        async def create(request: web.Request) -> web.Response:
            job = await request.json()
            for i in range(job["start"], job["start"] + job["count"]):
                server.store.create(releases(), NAMESPACE, {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRelease",
                    "metadata": {"name": f"{job['prefix']}{i:05d}", "namespace": NAMESPACE},
                    "spec": copy.deepcopy(job["spec"])})
                if i % 50 == 0:
                    await asyncio.sleep(0)
            return web.json_response({"created": job["count"]})

        async def phases(_: web.Request) -> web.Response:
            found = collections.Counter((o.get("status") or {}).get("phase") or "none"
                                        for o in server.store.list_objects(releases(), NAMESPACE))
            return web.json_response(found)

        async def failures(_: web.Request) -> web.Response:
            return web.json_response([[o["metadata"]["name"], (o.get("status") or {}).get("message"),
                                       (o.get("status") or {}).get("failure")]
                                      for o in server.store.list_objects(releases(), NAMESPACE)
                                      if (o.get("status") or {}).get("phase") in ("Failed", "RolledBack")][:5])

        async def requests(request: web.Request) -> web.Response:
            since, until = float(request.query.get("since", 0)), float(request.query.get("until", 1e12))
            return web.json_response([r for r in list(recorder.rows) if since <= r[0] < until])

        app = web.Application()
        app.add_routes([web.post("/create", create), web.get("/phases", phases), web.get("/requests", requests),
                        web.get("/failures", failures)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"READY {server.url} http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()


# The processes, seen from the benchmark.

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Processes:
    """What this benchmark started, each child in its own process group: stop() ends every group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              pipe: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        process = subprocess.Popen(argv, stdout=subprocess.PIPE if pipe else log, stderr=log, cwd=ROOT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-size:]
        return ""

    def stop(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self.started):
            try:
                process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.stdout:
                process.stdout.close()
        self.started = []


class Emulator:
    """The emulator process and its control port."""

    def __init__(self, processes: Processes, training_delay: float, name: str) -> None:
        self.kubeconfig = processes.workdir / f"{name}.kubeconfig"
        self.process = processes.start(name, [
            sys.executable, __file__, "emulator", "--kubeconfig", str(self.kubeconfig),
            "--training-delay", str(training_delay)], pipe=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().split()  # the caller's alarm bounds this
        if line[:1] != ["READY"]:
            raise RuntimeError(f"the emulator did not start:\n{processes.log_tail(name)}")
        self.api_url, self.control = line[1], line[2]

    def call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.control + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())

    def create(self, prefix: str, count: int, spec: dict[str, Any]) -> None:
        for start in range(0, count, 500):
            self.call("/create", {"prefix": prefix, "start": start, "count": min(500, count - start), "spec": spec})

    def phases(self) -> dict[str, int]:
        return dict(self.call("/phases"))

    def requests(self, since: float = 0.0, until: float = 1e12) -> list[list[Any]]:
        return list(self.call(f"/requests?since={since!r}&until={until!r}"))


def operator_argv(metrics_port: int) -> list[str]:
    return [sys.executable, "-m", "modelrelease", "run", "-A", "--metrics-port", str(metrics_port),
            "--metrics-address", "127.0.0.1"]


def scrape(port: int) -> dict[str, float]:
    """The operator's counters and gauges, as 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                found[key] = float(value)
    return found


def passes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    prefix = "modelrelease_reconcile_passes_total{result="
    keys = {k for k in (*before, *after) if k.startswith(prefix)}
    return {k[len(prefix) + 1:-2]: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(keys)}


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")


# Figures.

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def step_lags(rows: list[list[Any]]) -> tuple[list[float], list[float]]:
    """Per canary step advance: (patch lags, stepStartedAt lags), each from stepStartedAt + duration.

    The patch lag ends when the status patch that advanced was stored (also the last step's end, into
    Promoting); the stepStartedAt lag ends at the next step's stepStartedAt (whole seconds, step to step)."""
    by_release: dict[str, list[tuple[float, list[Any]]]] = collections.defaultdict(list)
    for t, _, kind, _, _, release, step, *_ in rows:
        if kind == "status" and step and release:
            by_release[release].append((t, step))
    patch_lags, status_lags = [], []
    for sequence in by_release.values():
        for (_, before), (t, after) in itertools.pairwise(sequence):
            if before[0] != "Progressing" or not before[3] or before[1] != after[1]:
                continue
            could_end = parse_time(before[3]) + STEP_SECONDS
            if after[0] == "Progressing" and after[2] == before[2] + 1 and after[3]:
                patch_lags.append(t - could_end)
                status_lags.append(parse_time(after[3]) - could_end)
            elif after[0] == "Promoting":
                patch_lags.append(t - could_end)
    return patch_lags, status_lags


def canary_writes(rows: list[list[Any]]) -> tuple[collections.Counter[str], int]:
    """Writes made while each release canaried (after its first step began, up to Promoting), by kind;
    and the steps it advanced meanwhile (into the next step, and out of the last one)."""
    spans: dict[str, list[float]] = {}
    for t, _, kind, _, _, release, step, *_ in rows:
        if kind == "status" and step and release:
            if step[0] == "Progressing" and step[2] == 0 and step[1] == 1 and release not in spans:
                spans[release] = [t, float("inf")]
            elif step[0] == "Promoting" and release in spans:
                spans[release][1] = min(spans[release][1], t)
    spans = {r: s for r, s in spans.items() if s[1] < float("inf")}
    kinds: collections.Counter[str] = collections.Counter()
    for t, method, kind, _, watch, release, _, reason, _ in rows:
        if release in spans and method != "GET" and not watch:
            start, end = spans[release]
            # Events are posted after the status patch they describe (by kopf's poster, a little later).
            if (kind == "event" and reason in ("StepAdvanced", "Promoting")) or (kind != "event" and start < t <= end):
                kinds[kind] += 1
    return kinds, len(spans) * 5


def mean_or_zero(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description="the emulator process of bench/scale.py")
    parser.add_argument("role", choices=["emulator"])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--training-delay", type=float, default=0.5)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
