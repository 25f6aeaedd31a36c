"""How soon a breaching canary stops getting users' traffic: through an HTTPRoute's weights, or through its pods.

The real operator process (`python -m modelrelease run -A`) against the embedded API (emulated Job and
Deployment controllers; every Deployment generation becomes ready --ready-delay seconds after it is
written) and a scripted Prometheus. The same release in two modes: serving.replicas 10, a stage that
becomes the stable, then a canary step at weight 50 held for ten minutes, analysis every second with
failureLimit 0 and an error-rate bound of 5%.

  pods   no trafficRouting: one Service over both Deployments, so the canary's share of the users is
         its share of the *ready* pods. A rollback hands the canary's replicas back a quarter at a time,
         each batch only once the stable has the pods ready to take it.
  route  serving.trafficRouting.gatewayAPI.httpRoute: the HTTPRoute's backendRefs weights carry the
         split; the stable keeps all 10 replicas, and a rollback sets the route to the stable before
         any canary pod goes.

Each trial creates a release, waits until its canary serves at weight 50, then makes the canary breach
(error rate 0.9) at a random moment after an analysis run; trial k breaches at the same moment of the
analysis schedule in both modes, so detection takes alike and the figures differ by what each mode does
once the rollback is decided. The figures (seconds from the breach; the table's legend says what each
is) come from the embedded API's request log (when each write was served: the HTTPRoute PUT that leaves
the canary Service no weight, the canary Deployment's PATCH to 0 replicas) and from a watch on the
Deployments (when a status with no ready canary pod arrived); both on this process's clock. In the pods
mode the canary's traffic ends with its last ready pod; in the route mode with the route's write.

Run from the repository root:  .venv/bin/python bench/route_breach.py [--trials 5] [--ready-delay 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the scripted world in tests/

import kubernetes
from rich.console import Console
from rich.table import Table
from tests.operator.conftest import healthy, release_spec
from tests.operator.fakes import FakePrometheus, TrainingScript

from modelrelease.api.crd import build_crd
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.gateway_crd import build_httproute_crd
from modelrelease_local.outcomes import ScriptedExecutor, ScriptedRollout
from modelrelease_local.recording import RequestRecord

T = TypeVar("T")
NAMESPACE = "default"
REPLICAS, WEIGHT = 10, 50
ANALYSIS_INTERVAL = 1.0
WAIT = 90.0  # a bound on waiting for something that should happen, not a figure
RELEASES = ("modelrelease.io", "v1alpha1", "modelreleases")
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
MODES = ("pods", "route")


def wait_until(condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
    return result


def read(custom: kubernetes.client.CustomObjectsApi, kind: tuple[str, str, str], name: str) -> dict[str, Any]:
    return cast("dict[str, Any]", custom.get_namespaced_custom_object(kind[0], kind[1], NAMESPACE, kind[2], name))


def release_body(name: str, prometheus_url: str, routed: bool) -> dict[str, Any]:
    """The operator tests' release: its first stage becomes the stable, its second holds a canary at 50."""
    spec = release_spec(prometheus_url)
    spec["stages"] = spec["stages"][:2]
    # The last stage must end at weight 100; the breach comes long before the held step ends.
    spec["stages"][1]["steps"] = [{"weight": WEIGHT, "duration": "10m"}, {"weight": 100, "duration": "1s"}]
    spec["serving"] = {"replicas": REPLICAS}
    if routed:
        # scaleDownDelay (30s by default) is short here so a trial ends soon; no traffic figure moves.
        spec["serving"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": f"{name}-route"}, "scaleDownDelay": "1s"}
    return {"apiVersion": f"{RELEASES[0]}/{RELEASES[1]}", "kind": "ModelRelease",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def route_body(release: str) -> dict[str, Any]:
    """A user's route to the stable, as tests/operator/test_routing.py creates it."""
    return {"apiVersion": f"{ROUTES[0]}/{ROUTES[1]}", "kind": "HTTPRoute", "metadata": {"name": f"{release}-route"},
            "spec": {"parentRefs": [{"name": "public"}], "hostnames": ["digits.example.com"],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1/models"}}],
                                "backendRefs": [{"name": f"{release}-stable", "port": 8501}]}]}}


class DeploymentWatch:
    """Every Deployment the API sends, with the moment it arrived: (time, name, ready replicas)."""

    def __init__(self, apps: kubernetes.client.AppsV1Api):
        self.apps = apps
        self.seen: list[tuple[float, str, int]] = []
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="deployment watch")
        self._thread.start()

    def _follow(self) -> None:
        while not self._stopped.is_set():  # a watch the server ends is opened again
            try:
                for event in kubernetes.watch.Watch().stream(self.apps.list_namespaced_deployment, NAMESPACE,
                                                              timeout_seconds=60):
                    obj = event["object"]
                    ready = (obj.status and obj.status.ready_replicas) or 0
                    with self._lock:
                        self.seen.append((time.time(), obj.metadata.name, ready))
                    if self._stopped.is_set():
                        return
            except Exception:  # the server is going away, or the stream broke: look again
                if not self._stopped.is_set():
                    time.sleep(0.1)

    def snapshot(self) -> list[tuple[float, str, int]]:
        with self._lock:
            return list(self.seen)

    def ready(self, name: str) -> int | None:
        with self._lock:
            return next((ready for _, seen, ready in reversed(self.seen) if seen == name), None)

    def ready_zero_after(self, name: str, since: float) -> float | None:
        with self._lock:
            return next((at for at, seen, ready in self.seen if seen == name and at >= since and ready == 0), None)

    def stop(self) -> None:
        self._stopped.set()


@dataclass
class Stack:
    server: EmbeddedApiServer
    prometheus: FakePrometheus
    custom: kubernetes.client.CustomObjectsApi
    watch: DeploymentWatch
    log: Path


@contextmanager
def stack(workdir: Path, ready_delay: float, label: str) -> Iterator[Stack]:
    """The embedded API with the emulated controllers, fake Prometheus, both CRDs and the operator process."""
    with ExitStack() as cleanup:
        rollout = ScriptedRollout(ready_delay=ready_delay)
        server = EmbeddedApiServer(controllers=[ControllerEmulator(ScriptedExecutor(TrainingScript()), rollout,
                                                                   job_backoff_scale=0.0)]).start()
        cleanup.callback(server.stop)
        prometheus = FakePrometheus().start()
        cleanup.callback(prometheus.stop)
        healthy(prometheus)
        kubeconfig = server.write_kubeconfig(workdir / f"{label}-kubeconfig")
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        extensions = kubernetes.client.ApiextensionsV1Api(client)
        extensions.create_custom_resource_definition(build_crd())
        extensions.create_custom_resource_definition(build_httproute_crd())
        apps = kubernetes.client.AppsV1Api(client)
        watch = DeploymentWatch(apps)
        cleanup.callback(watch.stop)
        log = workdir / f"{label}-operator.log"
        with open(log, "wb") as out:
            operator = subprocess.Popen([sys.executable, "-m", "modelrelease", "run", "-A"], stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        cleanup.callback(operator.wait)
        cleanup.callback(os.killpg, operator.pid, signal.SIGKILL)  # its own session: it and whatever it started
        yield Stack(server, prometheus, kubernetes.client.CustomObjectsApi(client), watch, log)


@dataclass(frozen=True)
class Trial:  # seconds from the breach
    decided: float
    traffic_zero: float
    replicas_zero: float
    ready_zero: float
    exposure: float
    """The canary's share of the users integrated from the breach to canary traffic 0 (share x seconds)."""


def first(records: list[RequestRecord], since: float, wanted: Callable[[RequestRecord], bool]) -> float | None:
    return next((r.timestamp for r in records if r.timestamp >= since and r.status < 300 and wanted(r)), None)


def integrate(share_at_start: float, changes: list[tuple[float, float]], start: float, end: float) -> float:
    """The integral of a step function from start to end: a share that changes to each value at its time."""
    total, share, since = 0.0, share_at_start, start
    for at, value in sorted(changes):
        if at >= end:
            break
        total += share * (max(at, start) - since)
        share, since = value, max(at, start)
    return total + share * (end - since)


def route_share(route: dict[str, Any], release: str) -> float:
    """The canary's share of the weights on the release's two Services (0 when the route names neither)."""
    weights = {"canary": 0, "stable": 0}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            for track in weights:
                if ref.get("name") == f"{release}-{track}":
                    weights[track] += int(ref.get("weight", 1))
    total = sum(weights.values())
    return weights["canary"] / total if total else 0.0


def pod_share_changes(watch: DeploymentWatch, release: str, breach: float) -> tuple[float, list[tuple[float, float]]]:
    """The canary's share of all ready pods at the breach, and each change of it after (one Service over both)."""
    ready = {f"{release}-canary": 0, f"{release}-stable": 0}

    def share() -> float:
        total = sum(ready.values())
        return ready[f"{release}-canary"] / total if total else 0.0

    seen = [entry for entry in watch.snapshot() if entry[1] in ready]
    for _, name, count in (s for s in seen if s[0] < breach):
        ready[name] = count
    at_breach, changes = share(), []
    for at, name, count in (s for s in seen if s[0] >= breach):
        ready[name] = count
        changes.append((at, share()))
    return at_breach, changes


def create_and_reach_weight(world: Stack, release: str, routed: bool) -> None:
    custom, canary, stable = world.custom, f"{release}-canary", f"{release}-stable"
    if routed:
        custom.create_namespaced_custom_object(*ROUTES[:2], NAMESPACE, ROUTES[2], route_body(release))
    custom.create_namespaced_custom_object(*RELEASES[:2], NAMESPACE, RELEASES[2],
                                           release_body(release, world.prometheus.url, routed))
    canary_pods = -(-REPLICAS * WEIGHT // 100)
    stable_pods = REPLICAS if routed else REPLICAS - canary_pods  # with a route the stable keeps every replica

    def serving_at_weight() -> bool:
        status = read(custom, RELEASES, release).get("status") or {}
        if status.get("phase") != "Progressing" or status.get("canaryWeight") != WEIGHT:
            return False
        if world.watch.ready(canary) != canary_pods or world.watch.ready(stable) != stable_pods:
            return False
        return not routed or route_share(read(custom, ROUTES, f"{release}-route"), release) == WEIGHT / 100

    wait_until(serving_at_weight, f"{release}'s canary to serve at weight {WEIGHT}")


def breach_after_next_run(world: Stack, offset: float) -> float:
    """Make the canary breach ``offset`` seconds after the next analysis run's canary error-rate query; the
    moment of the breach."""
    asked = len(world.prometheus.queries)
    wait_until(lambda: any(q.startswith("error_rate") and 'track="canary"' in q
                           for q in world.prometheus.queries[asked:]), "the next analysis run")
    time.sleep(offset)
    world.prometheus.set("error_rate", canary=0.9, stable=0.0)
    return time.time()


def run_trial(world: Stack, release: str, routed: bool, offset: float) -> Trial:
    custom, canary = world.custom, f"{release}-canary"
    healthy(world.prometheus)
    create_and_reach_weight(world, release, routed)
    breach = breach_after_next_run(world, offset)

    def withdrawn() -> bool:
        status = read(custom, RELEASES, release).get("status") or {}
        return status.get("phase") == "RolledBack" and world.watch.ready_zero_after(canary, breach) is not None

    wait_until(withdrawn, f"{release} to be rolled back with no canary pod ready")
    healthy(world.prometheus)
    writes = world.server.requests.writes()
    own = (f"/modelreleases/{release}/status", f"/deployments/{canary}", f"/deployments/{release}-stable",
           f"/httproutes/{release}-route")
    # While the canary holds at its step the operator writes nothing for it (routine analysis runs stay in
    # memory), so its first write after the breach is the deciding pass's; a pass writes its status last.
    decided = first(writes, breach, lambda r: r.path.endswith(own))
    replicas_zero = first(writes, breach, lambda r: r.method == "PATCH" and r.path.endswith(f"/deployments/{canary}")
                          and isinstance(r.body, dict) and (r.body.get("spec") or {}).get("replicas") == 0)
    ready_zero = world.watch.ready_zero_after(canary, breach)
    if routed:
        puts = [(r.timestamp, route_share(r.body, release)) for r in writes if r.timestamp >= breach
                and r.method == "PUT" and r.status < 300 and r.path.endswith(f"/httproutes/{release}-route")
                and isinstance(r.body, dict)]
        traffic_zero = next((at for at, share in puts if share == 0), None)
        at_breach, changes = WEIGHT / 100, puts
    else:
        traffic_zero = ready_zero
        at_breach, changes = pod_share_changes(world.watch, release, breach)
    if decided is None or replicas_zero is None or ready_zero is None or traffic_zero is None:
        raise RuntimeError(f"{release}: a write is missing from the request log (decided {decided}, "
                           f"replicas 0 {replicas_zero}, ready 0 {ready_zero}, traffic 0 {traffic_zero})")
    return Trial(decided - breach, traffic_zero - breach, replicas_zero - breach, ready_zero - breach,
                 integrate(at_breach, changes, breach, traffic_zero))


def run_mode(mode: str, offsets: list[float], ready_delay: float, workdir: Path, console: Console) -> list[Trial]:
    results: list[Trial] = []
    with stack(workdir, ready_delay, mode) as world:
        try:
            for number, offset in enumerate(offsets, 1):
                trial = run_trial(world, f"digits-{number}", mode == "route", offset)
                results.append(trial)
                console.print(f"  {mode} trial {number}: decided {trial.decided:.2f}s, canary traffic 0 "
                              f"{trial.traffic_zero:.2f}s, replicas 0 {trial.replicas_zero:.2f}s")
        except BaseException:
            tail = world.log.read_text(errors="replace")[-4000:]
            console.print(f"[red]{mode} mode failed; the operator's log ends:[/red]\n{tail}")
            raise
    return results


@dataclass(frozen=True)
class Figure:
    heading: str
    of: Callable[[Trial], float]
    meaning: str
    ratio: bool = False  # whether the table shows the pods mode's figure over the route mode's


FIGURES = (
    Figure("rollback decided", lambda t: t.decided,
           "the deciding pass's first write (detection: the same mechanism in both modes)"),
    Figure("canary traffic 0", lambda t: t.traffic_zero,
           "route: the HTTPRoute PUT that leaves the canary Service no weight; pods: the canary Deployment "
           "reports no ready pod", ratio=True),
    Figure("traffic 0\nafter decided", lambda t: t.traffic_zero - t.decided,
           "canary traffic 0 less rollback decided: the withdrawal alone"),
    Figure("canary replicas 0", lambda t: t.replicas_zero, "the PATCH of the canary Deployment to spec.replicas 0"),
    Figure("canary ready 0", lambda t: t.ready_zero, "the canary Deployment's status with no ready pod"),
    Figure("exposure", lambda t: t.exposure,
           "the canary's share of the users integrated from the breach to canary traffic 0, in share x seconds "
           "(0.5 is one second at weight 50)", ratio=True),
)


def print_table(results: dict[str, list[Trial]], ready_delay: float, console: Console) -> None:
    table = Table(title=f"seconds from the canary's breach, median / max (serving.replicas {REPLICAS}, weight "
                        f"{WEIGHT}, analysis every {ANALYSIS_INTERVAL:g}s, pods ready {ready_delay:g}s after each "
                        "Deployment write)")
    table.add_column("mode")
    table.add_column("trials", justify="right")
    for column in FIGURES:
        table.add_column(column.heading, justify="right")
    for mode, trials in results.items():
        cells = []
        for column in FIGURES:
            values = [column.of(t) for t in trials]
            cells.append(f"{statistics.median(values):.2f} / {max(values):.2f}")
        table.add_row(mode, str(len(trials)), *cells)
    ratios = []
    for column in FIGURES:
        pods, route = ([column.of(t) for t in results[m]] for m in MODES)
        route_median, route_max = statistics.median(route), max(route)
        shown = column.ratio and route_median > 0 and route_max > 0
        ratios.append(f"{statistics.median(pods) / route_median:.2f} / {max(pods) / route_max:.2f}" if shown else "")
    table.add_row("pods / route", "", *ratios)
    console.print(table)
    for column in FIGURES:
        console.print(f"  {column.heading.replace(chr(10), ' ')}: {column.meaning}")
    console.print("  pods / route: the pods mode's median over the route mode's, and max over max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=lambda text: max(1, int(text)), default=5,
                        help="trials per mode, at least 1 (default 5)")
    parser.add_argument("--ready-delay", type=float, default=0.5,
                        help="seconds until each Deployment write's pods are ready, both modes (default 0.5)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    console = Console()
    if console.width < 120:  # a pipe or a narrow terminal: keep the table's rows on one line each
        console = Console(width=120)
    # The same random moments of the analysis schedule in both modes (see the module's docstring).
    chooser = random.Random(args.seed)
    offsets = [chooser.uniform(0, ANALYSIS_INTERVAL) for _ in range(args.trials)]
    results: dict[str, list[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="route-breach-") as workdir:
        for mode in MODES:
            started = time.monotonic()
            results[mode] = run_mode(mode, offsets, args.ready_delay, Path(workdir), console)
            console.print(f"{mode} mode: {args.trials} trials in {time.monotonic() - started:.1f}s")
    print_table(results, args.ready_delay, console)


if __name__ == "__main__":
    main()
