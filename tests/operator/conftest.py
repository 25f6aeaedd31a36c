"""The operator for real: `python -m modelrelease run` as a process, against the embedded API server
(with emulated Job and Deployment controllers) and a scripted Prometheus, all over HTTP."""

from __future__ import annotations

import copy
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from modelrelease.api.crd import build_crd
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.gateway_crd import build_httproute_crd
from modelrelease_local.outcomes import ScriptedExecutor, ScriptedRollout
from tests.core.world import base_spec
from tests.operator.fakes import FakePrometheus, TrainingScript
from tests.waiting import wait_for

WAIT = 90.0  # a bound on waiting for something that should happen, not a performance limit
GROUP, VERSION, PLURAL = "modelrelease.io", "v1alpha1", "modelreleases"


def release_spec(prometheus_url: str) -> dict[str, Any]:
    """The planner tests' three-stage spec with one-second steps and scripted checks every second."""
    spec = base_spec(serving={"replicas": 4}, training={"backoffLimit": 0})
    for stage in spec["stages"]:
        for step in stage["steps"]:
            step["duration"] = "1s"
    spec["analysis"] = {
        "prometheus": {"url": prometheus_url, "timeout": "2s"},
        "interval": "1s", "failureLimit": 0, "inconclusiveLimit": 3, "minSampleCount": 5,
        "checks": [
            {"name": "errors", "query": 'error_rate{track="{{ track }}",version="{{ version }}"}', "max": 0.05,
             "sampleQuery": 'requests{track="{{ track }}"}'},
            {"name": "latency", "query": 'latency_p99{track="{{ track }}"}', "maxRatio": 1.5},
        ],
    }
    return spec


class Harness:
    """The cluster, the scripted world around it, and the operator process."""

    def __init__(self, server: EmbeddedApiServer, kubeconfig: pathlib.Path, prometheus: FakePrometheus,
                 training: TrainingScript, rollout: ScriptedRollout, logdir: pathlib.Path):
        self.server, self.kubeconfig, self.prometheus = server, kubeconfig, prometheus
        self.training, self.rollout, self.logdir = training, rollout, logdir
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # The operator process.
    def start_operator(self, *extra: str) -> None:
        self.starts += 1
        log = open(self.logdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelrelease", "run", "-A", "--verbose", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def kill_operator(self) -> None:
        """SIGKILL: no cleanup, no last status patch; whatever it knew must be in the resource."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart_operator(self) -> None:
        self.kill_operator()
        self.start_operator()

    def operator_log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("operator-*.log")))

    # The resources.
    def apply(self, name: str, spec: dict[str, Any], namespace: str = "default") -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRelease",
            "metadata": {"name": name, "namespace": namespace}, "spec": copy.deepcopy(spec)})

    def get(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch_spec(self, name: str, spec_patch: dict[str, Any], namespace: str = "default") -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec_patch})

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.get(name, namespace).get("status") or {}

    def wait_phase(self, name: str, *phases: str, namespace: str = "default", timeout: float = WAIT) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name, namespace)
            return status if status.get("phase") in phases else None
        try:
            return wait_for(reached, f"{name} to reach {phases}", timeout=timeout)
        except pytest.fail.Exception:
            print(self.operator_log()[-4000:])
            print(self.status(name, namespace))
            raise

    def jobs(self, namespace: str = "default") -> list[str]:
        return sorted(j.metadata.name for j in self.batch.list_namespaced_job(namespace).items)

    def deployment(self, name: str, namespace: str = "default") -> Any:
        return self.apps.read_namespaced_deployment(name, namespace)

    def events(self, namespace: str = "default") -> list[Any]:
        return self.core.list_namespaced_event(namespace).items

    def reasons(self, namespace: str = "default") -> list[str]:
        return [e.reason for e in sorted(self.events(namespace), key=lambda e: e.metadata.creation_timestamp)]

    def wait_events(self, *reasons: str, namespace: str = "default") -> list[Any]:
        """Events are posted after the status patch that caused them: wait until all have arrived."""
        return wait_for(lambda: set(reasons) <= set(self.reasons(namespace)) and self.events(namespace),
                        f"events {reasons} in {namespace}")


@pytest.fixture
def harness(tmp_path: pathlib.Path) -> Iterator[Harness]:
    training = TrainingScript()
    rollout = ScriptedRollout(ready_delay=0.1)
    # Failed trainings are retried at once: the tests script the outcomes, not Kubernetes' back-off.
    emulator = ControllerEmulator(ScriptedExecutor(training), rollout, job_backoff_scale=0.0)
    server = EmbeddedApiServer(controllers=[emulator])
    server.start()
    prometheus = FakePrometheus().start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    harness = Harness(server, kubeconfig, prometheus, training, rollout, tmp_path)
    healthy(prometheus)
    try:
        extensions = kubernetes.client.ApiextensionsV1Api(
            kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        extensions.create_custom_resource_definition(build_crd())
        extensions.create_custom_resource_definition(build_httproute_crd())
        harness.start_operator()
        yield harness
    finally:
        harness.kill_operator()
        prometheus.stop()
        server.stop()


def healthy(prometheus: FakePrometheus) -> None:
    prometheus.set("error_rate", canary=0.0, stable=0.0)
    prometheus.set("requests", canary=100.0, stable=100.0)
    prometheus.set("latency_p99", canary=0.05, stable=0.05)


# --- A whole cluster per call, for property tests --------------------------------------------------
# hypothesis runs one test function many times, so a function-scoped fixture would be shared by every
# example; each example of a randomised test needs its own API server, Prometheus and operator.


class FreshCluster:
    """`with FreshCluster(directory) as harness:` what the `harness` fixture gives, built and torn down here."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.harness: Harness | None = None
        self._server: EmbeddedApiServer | None = None
        self._prometheus: FakePrometheus | None = None

    def __enter__(self) -> Harness:
        self.directory.mkdir(parents=True, exist_ok=True)
        training = TrainingScript()
        rollout = ScriptedRollout(ready_delay=0.1)
        emulator = ControllerEmulator(ScriptedExecutor(training), rollout, job_backoff_scale=0.0)
        self._server = EmbeddedApiServer(controllers=[emulator]).start()
        try:
            self._prometheus = FakePrometheus().start()
            healthy(self._prometheus)
            kubeconfig = self._server.write_kubeconfig(self.directory / "kubeconfig")
            self.harness = Harness(self._server, kubeconfig, self._prometheus, training, rollout, self.directory)
            extensions = kubernetes.client.ApiextensionsV1Api(
                kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
            extensions.create_custom_resource_definition(build_crd())
            extensions.create_custom_resource_definition(build_httproute_crd())
            self.harness.start_operator()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.harness

    def __exit__(self, *_: object) -> None:
        if self.harness is not None:
            self.harness.kill_operator()
        if self._prometheus is not None:
            self._prometheus.stop()
        if self._server is not None:
            self._server.stop()


def terminate_operator(harness: Harness, grace: float = 30.0) -> None:
    """SIGTERM, as a Pod's deletion sends it: kopf stops its daemons and exits; SIGKILL after the grace."""
    process = harness.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        harness.kill_operator()
