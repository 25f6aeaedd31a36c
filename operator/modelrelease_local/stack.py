"""
The embedded default, all of it, on 127.0.0.1: ``LocalStack().start()`` ... ``stop()``.

What starts, in this order (and stops in the reverse order, also when a start fails half-way):

1. a Prometheus server (its own config and data under the state directory) scraping every model
   server the runner has ready; the targets follow the runner's endpoint registry;
2. the embedded Kubernetes API server with the ModelRelease and the Gateway API HTTPRoute CRDs
   applied, and its Job and
   Deployment controllers playing real processes: :class:`~.executor.ProcessJobExecutor` and
   :class:`~.runner.ProcessDeploymentRunner`; a kubeconfig for it in the state directory;
3. the operator, ``python -m modelrelease run -A``, as a subprocess with that kubeconfig;
4. the traffic generator, sending requests to every release's ready servers (through the release's
   HTTPRoute when it has one).

Everything lives in the state directory: ``kubeconfig``, ``api.sqlite`` (every API object, see
:mod:`.persistence`), ``ports.json`` (the ports last used), ``artifacts/`` (models, and ``logs/`` of
each trainer and server), ``logs/operator.log``, ``prometheus/``, and ``up.lock``/``up.pid`` (see
:mod:`.instance`).

A stack started again on the same state directory resumes: the API serves the objects it had (the
CRD is updated, not created again), on the same port when it is free (so a user's KUBECONFIG stays
valid), as does Prometheus; the Deployment controller starts the model servers of the Deployments
again, the Job controller gives each Job whose pod was lost with the old stack a new pod, and the
operator carries on from each release's status.

While it runs, the operator and Prometheus are supervised: started again when they exit, with
back-off (see :mod:`.supervision`); a restarted Prometheus is sent the scrape targets again. Every
process the stack starts dies with it, however it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any, Self

import kubernetes

from modelrelease import api
from modelrelease.api.crd import build_crd
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.executor import ProcessJobExecutor
from modelrelease_local.gateway_crd import HTTPROUTE_API_VERSION, HTTPROUTE_PLURAL, build_httproute_crd
from modelrelease_local.instance import StateClaim
from modelrelease_local.ports import port_is_free
from modelrelease_local.prometheus import PrometheusProcess, ScrapeTarget
from modelrelease_local.runner import EndpointKey, ProcessDeploymentRunner
from modelrelease_local.supervision import Supervisor, popen
from modelrelease_local.traffic import TrafficGenerator

__all__ = ["LocalStack", "StackSettings", "remembered_port", "scrape_targets"]

logger = logging.getLogger(__name__)
OPERATOR_STOP_GRACE = 15.0
PORTS_FILE = "ports.json"
API_STATE_FILE = "api.sqlite"


@dataclasses.dataclass
class StackSettings:
    state_dir: pathlib.Path = pathlib.Path(".modelrelease-local")
    api_port: int = 0  # 0: the port of the last run on this state directory when free, else any free one
    prometheus_port: int | None = None  # None: likewise
    scrape_interval: float = 1.0
    traffic_rate: float = 20.0  # predict requests per second, per release
    feedback_share: float = 0.5
    tester_share: float = 0.0  # the share of requests with the tester header (X-Canary: always)
    operator: bool = True
    traffic: bool = True
    operator_args: tuple[str, ...] = ("run", "-A")
    python: str = sys.executable
    fresh: bool = False  # forget the API objects, models, logs and metrics of an earlier run (once claimed)
    faults: Mapping[str, Any] | None = None  # a fault plan for the API server (see faults.py)


def remembered_port(state_dir: pathlib.Path, part: str) -> int | None:
    """The port ``part`` ("api", "prometheus") had in the last stack on this state directory, if it is free."""
    try:
        port = json.loads((state_dir / PORTS_FILE).read_text()).get(part)
    except (OSError, ValueError, AttributeError):
        return None
    return port if isinstance(port, int) and port > 0 and port_is_free(port) else None


def scrape_targets(endpoints: Mapping[EndpointKey, list[int]]) -> list[ScrapeTarget]:
    """One target per ready server; the server labels its series with model, version and track."""
    return [ScrapeTarget(address=f"127.0.0.1:{port}") for ports in endpoints.values() for port in ports]


class _TargetSync:
    """Keeps Prometheus' targets equal to the runner's endpoints, off the API server's loop."""

    def __init__(self, runner: ProcessDeploymentRunner, prometheus: PrometheusProcess) -> None:
        self.runner = runner
        self.prometheus = prometheus
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prometheus-targets", daemon=True)

    def nudge(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def _loop(self) -> None:
        # What the running server was sent, and which start of it that was: a restarted server is sent them again.
        sent: tuple[int, list[ScrapeTarget]] | None = None
        while not self._stop.is_set():
            self._wake.wait(2.0)  # also a periodic look: a server may have died meanwhile
            self._wake.clear()
            wanted = (self.prometheus.starts, scrape_targets(self.runner.endpoints()))
            if wanted != sent and not self._stop.is_set():
                try:
                    self.prometheus.set_targets(wanted[1])
                    sent = wanted if self.prometheus.running else None
                except Exception:
                    logger.exception("could not update the Prometheus targets")


class LocalStack:
    """Start and stop the whole embedded default; see the module's documentation."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.state_dir = self.settings.state_dir.resolve()
        self.artifact_root = self.state_dir / "artifacts"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.claim = StateClaim(self.state_dir)
        self.executor = ProcessJobExecutor(self.artifact_root, self.settings.python)
        self.runner = ProcessDeploymentRunner(self.artifact_root, self.settings.python)
        prometheus_port = self.settings.prometheus_port
        if prometheus_port is None:
            prometheus_port = remembered_port(self.state_dir, "prometheus")
        self.prometheus = PrometheusProcess(self.state_dir / "prometheus", port=prometheus_port,
                                            scrape_interval=self.settings.scrape_interval)
        self._server: EmbeddedApiServer | None = None  # made once the state directory is ours: it opens the store
        self.traffic: TrafficGenerator | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.supervisors: list[Supervisor] = []
        self._operator_log: IO[bytes] | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []

    @property
    def server(self) -> EmbeddedApiServer:
        if self._server is None:
            raise RuntimeError("The local stack is not started.")
        return self._server

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    @property
    def operator_log(self) -> pathlib.Path:
        return self.state_dir / "logs" / "operator.log"

    # Lifecycle.

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.claim.acquire()  # first: a second stack on this directory must touch nothing
        self._stops.append(("claim on the state directory", self.claim.release))
        if self.settings.fresh:
            self._forget_earlier_runs()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        self._stops.append(("prometheus", self.prometheus.stop))
        self.prometheus.start()
        sync = _TargetSync(self.runner, self.prometheus)
        self.runner.on_endpoints_changed = sync.nudge
        self._stops.append(("prometheus targets", sync.stop))
        sync.start()
        self._supervise("prometheus", lambda: self.prometheus.process, self.prometheus.start, on_restart=sync.nudge)
        # Last to stop (first in this list after Prometheus): processes outlive the loop that ran them.
        self._stops.append(("model servers", self.runner.close))
        self._stops.append(("trainers", self.executor.close))
        self._server = EmbeddedApiServer(
            port=self.settings.api_port or remembered_port(self.state_dir, "api") or 0,
            controllers=[ControllerEmulator(self.executor, self.runner)], state_file=self.state_dir / API_STATE_FILE,
            faults=self.settings.faults)
        self._stops.append(("API server", self.server.stop))
        self.server.start()
        self.server.write_kubeconfig(self.kubeconfig)
        self._remember_ports()
        self._apply_crd()
        if self.settings.operator:
            self._stops.append(("operator", self._stop_operator))
            self._start_operator()
            self._supervise("operator", lambda: self.operator, self._restart_operator)
        if self.settings.traffic:
            self.traffic = TrafficGenerator(self.runner.endpoints, rate=self.settings.traffic_rate,
                                            feedback_share=self.settings.feedback_share,
                                            routes=self.http_routes, tester_share=self.settings.tester_share)
            self._stops.append(("traffic", self.traffic.stop))
            self.traffic.start()

    def stop(self) -> None:
        """Stop what started, newest first; a part that fails to stop does not keep the others running."""
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception:
                logger.exception("could not stop the %s cleanly", name)

    def _forget_earlier_runs(self) -> None:
        """No API objects, models, logs or metrics of an earlier run (only the stack's own files go)."""
        for part in ("artifacts", "prometheus", "logs"):
            shutil.rmtree(self.state_dir / part, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            (self.state_dir / f"{API_STATE_FILE}{suffix}").unlink(missing_ok=True)
        self.prometheus.workdir.mkdir(parents=True, exist_ok=True)

    def _supervise(self, name: str, process: Callable[[], subprocess.Popen[bytes] | None],
                   restart: Callable[[], None], *, on_restart: Callable[[], None] | None = None) -> None:
        supervisor = Supervisor(name, process, restart, on_restart=on_restart)
        self.supervisors.append(supervisor)
        self._stops.append((f"{name} supervisor", supervisor.stop))  # stops before what it supervises
        supervisor.start()

    def restarts(self, *, countdown: bool = True) -> list[str]:
        """One line per supervised part that had to be started again (for the console and the live view)."""
        return [line for supervisor in self.supervisors
                if (line := supervisor.record.summary(countdown=countdown)) is not None]

    def _remember_ports(self) -> None:
        ports = {"api": self.server.port, "prometheus": self.prometheus.port}
        (self.state_dir / PORTS_FILE).write_text(json.dumps(ports))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # The operator.

    def _start_operator(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        if self._operator_log is None:
            self._operator_log = self.operator_log.open("ab")
        self.operator = popen(
            [self.settings.python, "-m", "modelrelease", *self.settings.operator_args], env=env,
            stdout=self._operator_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        logger.info("The operator runs as pid %d (log: %s)", self.operator.pid, self.operator_log)

    def _restart_operator(self) -> None:
        if self.operator is not None:
            with contextlib.suppress(ProcessLookupError):  # whatever it started goes with it
                os.killpg(self.operator.pid, signal.SIGKILL)
            self.operator.wait()
        self._start_operator()

    def _stop_operator(self) -> None:
        process, self.operator = self.operator, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # kopf stops its daemons and exits
            try:
                process.wait(OPERATOR_STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._operator_log is not None:
            self._operator_log.close()
            self._operator_log = None

    # The API, as a client sees it.

    def api_client(self) -> kubernetes.client.ApiClient:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)

    def _apply_crd(self) -> None:
        """Create the CRDs, or update them when the state directory has them from an earlier run."""
        for crd in (build_crd(), build_httproute_crd()):
            self._apply_one_crd(crd)

    def _apply_one_crd(self, crd: dict[str, Any]) -> None:
        with self.api_client() as client:
            extensions = kubernetes.client.ApiextensionsV1Api(client)
            try:
                # The client sends a plain dict as it is; its type hints only know the model classes.
                extensions.create_custom_resource_definition(crd)  # type: ignore[arg-type]
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                name = crd["metadata"]["name"]
                stored = client.sanitize_for_serialization(extensions.read_custom_resource_definition(name))
                crd["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
                extensions.replace_custom_resource_definition(name, crd)  # type: ignore[arg-type]

    def apply_release(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a ModelRelease through the API (as ``kubectl create -f`` would)."""
        namespace = (manifest.get("metadata") or {}).get("namespace") or "default"
        with self.api_client() as client:
            created = kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, dict(manifest))
        return dict(created)  # type: ignore[call-overload]

    def http_routes(self) -> list[dict[str, Any]]:
        """Every HTTPRoute (read from the store directly: the traffic generator reads them each second)."""
        return self.server.list_objects(HTTPROUTE_API_VERSION, HTTPROUTE_PLURAL)

    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored ModelRelease (read from the store directly: cheap enough to poll every second)."""
        return self.server.get_object(api.API_VERSION, api.PLURAL, namespace, name)

    def operator_alive(self) -> bool:
        return self.operator is not None and self.operator.poll() is None
