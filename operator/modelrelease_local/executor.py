"""
Run each Job's Pod as a real local process: the trainer container's command, args and env.

The image is not pulled or run: every image is taken to be the trainer image, whose entrypoint is
``python -m modelrelease_trainer``. A container without ``command`` runs that entrypoint with its
args; a ``command`` that starts with ``python``/``python3``/``python3.X`` runs with this machine's
interpreter; any other command is run as given and must exist on this machine (exit code 127 and a
termination message say so when it does not).

Paths are rewritten between the container's view and this machine's (see :mod:`.volumes`). The
termination message is written to a private file and read back when the process ends, with local
paths turned back into container paths: the operator records ``artifactPath`` from it and later
hands it to a Deployment as MODEL_PATH, which the local runner maps to this machine again.

Environment variables ``valueFrom.fieldRef`` are resolved from the Pod as the kubelet's downward API
does (an Indexed Job's JOB_COMPLETION_INDEX among them); secrets and config maps are not emulated.

An Indexed Job whose trainer container has TRAINER_WORKER_HOSTS (one ``host:port`` per worker, the
Pods' DNS names under the Job's headless Service) runs as that many trainer processes on this
machine, which has no such names: the Job gets as many free loopback ports, kept for its uid across
the retries of its Pods (a retried worker comes back at the address its peers know) until the Job's
run is over, and each process gets TRAINER_WORKER_HOSTS with those loopback addresses in place of the
DNS names. With JOB_COMPLETION_INDEX from the downward API, that is what a real cluster's pod has:
the trainer builds TF_CONFIG from them the same way here as there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from modelrelease_local.indexes import completion_index
from modelrelease_local.outcomes import JobOutcome
from modelrelease_local.ports import free_port
from modelrelease_local.supervision import popen
from modelrelease_local.volumes import PathMap, pod_path_map

__all__ = ["ProcessJobExecutor", "TrainingProgress", "field_value", "process_environment", "run_command",
           "worker_environment"]

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MESSAGE_LIMIT = 4096  # bytes of a container's termination message, as the kubelet keeps
LOG_FALLBACK_LINES = 80  # FallbackToLogsOnError: the kubelet's tail of the log
# What a process needs from this machine to run at all (a container brings its own).
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
POLL_INTERVAL = 0.1
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)\s*$")
_METADATA_MAP_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")
WORKER_HOSTS_ENV = "TRAINER_WORKER_HOSTS"
LOOPBACK = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class TrainingProgress:
    """What a running trainer's log says about its progress (Keras prints ``Epoch n/m``)."""

    namespace: str
    job: str
    epoch: int
    epochs: int
    last_line: str


def run_command(container: Mapping[str, Any], python: str) -> list[str]:
    """The local command line for a trainer-image container, before path rewriting."""
    command = list(container.get("command") or [])
    args = [str(arg) for arg in container.get("args") or []]
    if not command:
        return [python, "-m", "modelrelease_trainer", *args]
    if _PYTHON.fullmatch(os.path.basename(command[0])):
        return [python, *command[1:], *args]
    return [*command, *args]


def local_command(container: Mapping[str, Any], python: str, to_local: Callable[[str], str]) -> list[str]:
    """The command line with the container's paths made local. This machine's interpreter is never
    rewritten: it may itself live under a mapped prefix such as /tmp."""
    command = run_command(container, python)
    if command[0] == python:
        return [python, *(to_local(arg) for arg in command[1:])]
    return [to_local(arg) for arg in command]


def field_value(pod: Mapping[str, Any], path: str) -> str | None:
    """A downward-API ``fieldRef`` of the Pod, as the kubelet resolves it (None: a path it does not offer).
    A label or annotation the Pod lacks is the empty string; the Pod's addresses are this machine's."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    found = _METADATA_MAP_FIELD.match(path)
    if found:
        return str((meta.get(found[1]) or {}).get(found[2], ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"), "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": LOOPBACK, "status.podIPs": LOOPBACK, "status.hostIP": LOOPBACK, "status.hostIPs": LOOPBACK,
    }
    if path not in simple:
        return None
    return str(simple[path] or "")


def process_environment(container: Mapping[str, Any], paths: PathMap,
                        extra: Mapping[str, str] | None = None, *,
                        pod: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The container's env (values with container paths rewritten) over the few variables the process
    needs from this machine. ``valueFrom.fieldRef`` is resolved from ``pod``; other ``valueFrom`` sources
    (secrets, config maps, resources), and any without a Pod, are left out with a warning."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env["PYTHONUNBUFFERED"] = "1"  # the log streams as the process writes it
    env.update(extra or {})
    for variable in container.get("env") or []:
        if "value" in variable and variable["value"] is not None:
            env[variable["name"]] = paths.to_local(str(variable["value"]))
        elif variable.get("valueFrom"):
            field_path = (variable["valueFrom"].get("fieldRef") or {}).get("fieldPath")
            value = field_value(pod, field_path) if pod is not None and field_path else None
            if value is None:
                logger.warning("env %s uses valueFrom %s, which the local executor does not resolve",
                               variable["name"], field_path or ", ".join(variable["valueFrom"]))
            else:
                env[variable["name"]] = value
    return env


def worker_environment(ports: list[int]) -> dict[str, str]:
    """TRAINER_WORKER_HOSTS for the workers of a Job that listen on these loopback ports, in index order
    (each worker's own index is its JOB_COMPLETION_INDEX)."""
    return {WORKER_HOSTS_ENV: ",".join(f"{LOOPBACK}:{port}" for port in ports)}


def _host_list(hosts: str) -> list[str]:
    return [host.strip() for host in hosts.split(",") if host.strip()]


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(LOOPBACK)
        if port not in ports:  # the kernel may hand the same free port out twice in a row
            ports.append(port)
    return ports


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything it started (it leads its own session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def exit_code_of(returncode: int) -> int:
    """A signal death as a shell and the kubelet report it: 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode


def _trainer_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        raise ValueError("the pod has no containers")
    return next((c for c in containers if c.get("name") == "trainer"), containers[0])


def _truncate(message: str) -> str:
    data = message.encode()
    if len(data) <= MESSAGE_LIMIT:
        return message
    return data[-MESSAGE_LIMIT:].decode(errors="ignore")


def _log_tail(path: pathlib.Path, lines: int = LOG_FALLBACK_LINES) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@dataclasses.dataclass
class _Worker:
    """A trainer process of a running Pod: its log, and its pid once started."""

    log_file: pathlib.Path
    pid: int | None = None


WorkerKey = tuple[str, str, int]  # namespace, job name, completion index (0 for a NonIndexed Job's Pod)


class ProcessJobExecutor:
    """A :class:`~.outcomes.JobExecutor` that runs the trainer as a local process per Pod."""

    def __init__(self, artifact_root: str | os.PathLike[str], python: str = sys.executable, *,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.artifact_root = pathlib.Path(artifact_root).resolve()
        self.python = python
        self.extra_env = dict(extra_env or {})
        self.log_dir = self.artifact_root / "logs"
        self._running: dict[WorkerKey, _Worker] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._ports: dict[str, list[int]] = {}  # Job uid -> its workers' loopback ports

    def log_path(self, pod: Mapping[str, Any]) -> pathlib.Path:
        meta = pod.get("metadata") or {}
        return self.log_dir / f"{meta.get('namespace') or 'default'}_{meta.get('name') or 'pod'}.log"

    async def start(self, job: Mapping[str, Any], pod: Mapping[str, Any]) -> JobOutcome:
        container = _trainer_container(pod)
        meta = job.get("metadata") or {}
        index = completion_index(pod)
        key = (meta.get("namespace") or "", meta.get("name") or "", index or 0)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{pod['metadata'].get('name', 'pod')}-"))
        try:
            paths = pod_path_map(pod.get("spec") or {}, container, self.artifact_root, scratch)
            termination_file = scratch / "termination-log"
            termination_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
            command = local_command(container, self.python, lambda arg: str(termination_file)
                                    if arg == termination_path else paths.to_local(arg))
            env = process_environment(container, paths, {**self.extra_env, "TERMINATION_LOG": str(termination_file)},
                                      pod=pod)
            if index is not None and env.get(WORKER_HOSTS_ENV):
                uid = str(meta.get("uid"))
                if uid not in self._ports:
                    self._ports[uid] = _distinct_free_ports(len(_host_list(env[WORKER_HOSTS_ENV])))
                env.update(worker_environment(self._ports[uid]))
            if shutil.which(command[0], path=env.get("PATH")) is None and not os.path.exists(command[0]):
                return JobOutcome.failed(127, f"{command[0]}: command not found on this machine (local executor)")
            worker = self._running[key] = _Worker(self.log_path(pod))
            try:
                returncode = await self._run(command, env, scratch, worker)
            finally:
                if self._running.get(key) is worker:
                    del self._running[key]
            text = termination_file.read_text(errors="replace").strip() if termination_file.exists() else ""
            if not text and returncode != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                text = _log_tail(worker.log_file).strip()
            message = _truncate(paths.message_to_cluster(text)) if text else None
            if returncode == 0:
                return JobOutcome.succeeded(message)
            return JobOutcome.failed(exit_code_of(returncode), message)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def job_ended(self, job: Mapping[str, Any]) -> None:
        """The Job's run is over (finished or deleted): its workers' ports are free again."""
        self._ports.pop(str((job.get("metadata") or {}).get("uid")), None)

    async def _run(self, command: list[str], env: dict[str, str], cwd: pathlib.Path, worker: _Worker) -> int:
        worker.log_file.parent.mkdir(parents=True, exist_ok=True)
        with worker.log_file.open("ab") as log:
            logger.info("Starting %s (log: %s)", " ".join(command), worker.log_file)
            # Its own session: Ctrl-C in the terminal reaches us, not the trainer, and a kill of the
            # group takes whatever the trainer started. It dies with this process (see supervision.popen).
            process = popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd, start_new_session=True)
        self._processes[process.pid] = process
        worker.pid = process.pid
        try:
            while process.poll() is None:
                await asyncio.sleep(POLL_INTERVAL)
            return int(process.returncode)
        finally:
            kill_group(process)  # cancelled (Job deleted, deadline): the process goes too
            self._processes.pop(process.pid, None)

    def progress(self) -> list[TrainingProgress]:
        """The epoch each running Job's trainer has reached, from its log: with several workers, the
        chief's (index 0; while it does not run, the lowest index running)."""
        found = []
        reported: set[tuple[str, str]] = set()
        for (namespace, job, _), worker in sorted(self._running.items()):
            if (namespace, job) in reported:
                continue
            reported.add((namespace, job))
            epoch, epochs, last = 0, 0, ""
            for line in _log_tail(worker.log_file, 200).splitlines():
                match = _EPOCH.match(line.strip())
                if match:
                    epoch, epochs = int(match[1]), int(match[2])
                if line.strip():
                    last = line.strip()
            found.append(TrainingProgress(namespace, job, epoch, epochs, last[-160:]))
        return found

    def running_workers(self) -> dict[WorkerKey, int]:
        """The pid of each running trainer process by (namespace, job, completion index); a NonIndexed
        Job's Pod is index 0. For tests that stop one worker of a Job."""
        alive = set(self.running_pids())
        return {key: worker.pid for key, worker in list(self._running.items())
                if worker.pid is not None and worker.pid in alive}

    def running_pids(self) -> list[int]:
        return sorted(pid for pid, process in list(self._processes.items()) if process.poll() is None)

    def close(self) -> None:
        """Kill every process still running (for a stack stopping without a running loop)."""
        for process in list(self._processes.values()):
            kill_group(process)
        self._processes.clear()
