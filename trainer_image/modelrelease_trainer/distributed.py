"""Which workers train a stage together, and the tf.distribute strategy they train under.

A worker finds its cluster, in this order:
  1. TF_CONFIG, TensorFlow's own JSON ({"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}});
  2. TRAINER_WORKER_HOSTS (comma-separated host:port) with JOB_COMPLETION_INDEX, which Kubernetes sets in
     each pod of an Indexed Job; TF_CONFIG is built from them;
  3. neither, with --workers 1: one local worker (several local GPUs are mirrored).
Worker 0 is the chief: the only one that writes into --output. Parsing the environment is pure (no
TensorFlow), so a wrong cluster fails before any data is read.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from modelrelease_trainer.exit_codes import ConfigError, TransientError

log = logging.getLogger(__name__)
TF_CONFIG = "TF_CONFIG"
WORKER_HOSTS = "TRAINER_WORKER_HOSTS"
COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
MAX_WORKERS = 64
_OP_PREFIX = re.compile(r"\{\{[^}]*\}\}\s*")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


@dataclass(frozen=True)
class Cluster:
    workers: int
    index: int
    """This worker's index in hosts; 0 is the chief."""
    hosts: tuple[str, ...]
    """host:port of every worker, in index order; empty for a single local worker."""
    origin: str
    """Where the cluster came from: TF_CONFIG, TRAINER_WORKER_HOSTS or local."""

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def tf_config(self) -> str:
        return json.dumps({"cluster": {"worker": list(self.hosts)}, "task": {"type": "worker", "index": self.index}})


LOCAL = Cluster(workers=1, index=0, hosts=(), origin="local")
"""A single worker on this machine, with no cluster to find."""


def resolve_cluster(workers: int, env: Mapping[str, str]) -> Cluster:
    """The cluster this process belongs to; raises ConfigError naming the variable and the flag."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be an integer from 1 to {MAX_WORKERS}, got {workers}")
    if env.get(TF_CONFIG, "").strip():
        hosts, index = _from_tf_config(env[TF_CONFIG], workers)
        return Cluster(workers=workers, index=index, hosts=hosts, origin=TF_CONFIG)
    if env.get(WORKER_HOSTS, "").strip():
        hosts, index = _from_worker_hosts(env[WORKER_HOSTS], env.get(COMPLETION_INDEX), workers)
        return Cluster(workers=workers, index=index, hosts=hosts, origin=WORKER_HOSTS)
    if workers > 1:
        raise ConfigError(
            f"--workers {workers} needs {TF_CONFIG}, or {WORKER_HOSTS} and {COMPLETION_INDEX} "
            "(set by an Indexed Job)"
        )
    return LOCAL


def _from_tf_config(text: str, workers: int) -> tuple[tuple[str, ...], int]:
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{TF_CONFIG} is not JSON ({exc}); see TensorFlow's TF_CONFIG format") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f'{TF_CONFIG} needs "cluster" and "task" objects')
    others = sorted(set(cluster) - {"worker"})
    if others:
        raise ConfigError(
            f"{TF_CONFIG} has {', '.join(others)} tasks; only worker tasks are supported (worker 0 is the chief)"
        )
    hosts = cluster.get("worker")
    if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
        raise ConfigError(f'{TF_CONFIG} cluster.worker must be a list of "host:port" strings')
    _check_count(hosts, workers, f"{TF_CONFIG} cluster.worker")
    _check_addresses(hosts, f"{TF_CONFIG} cluster.worker")
    if task.get("type") != "worker":
        raise ConfigError(f'{TF_CONFIG} task.type must be "worker", got {task.get("type")!r}')
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < workers:
        raise ConfigError(f"{TF_CONFIG} task.index must be an integer from 0 to {workers - 1}, got {index!r}")
    return tuple(hosts), index


def _from_worker_hosts(text: str, index_text: str | None, workers: int) -> tuple[tuple[str, ...], int]:
    hosts = [host.strip() for host in text.split(",")]
    _check_count(hosts, workers, WORKER_HOSTS)
    _check_addresses(hosts, WORKER_HOSTS)
    if index_text is None or not index_text.strip():
        raise ConfigError(
            f"{WORKER_HOSTS} is set but {COMPLETION_INDEX} is not; run the workers as an Indexed Job "
            "(completionMode: Indexed), which sets it in every pod"
        )
    try:
        index = int(index_text)
    except ValueError:
        index = -1
    if not 0 <= index < workers:
        raise ConfigError(f"{COMPLETION_INDEX} must be an integer from 0 to {workers - 1} (--workers {workers}), "
                          f"got {index_text!r}")
    return tuple(hosts), index


def _check_count(hosts: list[str], workers: int, where: str) -> None:
    if len(hosts) != workers:
        raise ConfigError(
            f"{where} lists {len(hosts)} workers but --workers is {workers}; they must agree"
        )


def _check_addresses(hosts: list[str], where: str) -> None:
    for host in hosts:
        match = _ADDRESS.match(host)
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ConfigError(f'{where}: {host!r} is not "host:port" (port 1-65535)')
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"{where} lists a worker address twice: {', '.join(hosts)}")


def export_tf_config(cluster: Cluster, environ: MutableMapping[str, str] = os.environ) -> None:
    """TensorFlow reads the cluster from TF_CONFIG when the strategy is created, so set it first."""
    if cluster.multi_worker:
        environ[TF_CONFIG] = cluster.tf_config()


def make_strategy(cluster: Cluster, gpus: int) -> Any:
    """MultiWorkerMirroredStrategy across workers; otherwise today's choice for one worker.

    A multi-worker strategy must exist before TensorFlow runs its first operation (it configures the
    process' collective ops), so runtime.configure creates it before anything else touches TensorFlow.
    """
    import tensorflow as tf

    if cluster.multi_worker:
        export_tf_config(cluster)
        strategy: Any = tf.distribute.MultiWorkerMirroredStrategy()
        log.info("worker %d of %d (%s)%s; %d replicas in sync", cluster.index, cluster.workers, cluster.origin,
                 ", the chief" if cluster.is_chief else "", strategy.num_replicas_in_sync)
        return strategy
    if gpus > 1:
        log.info("training on %d GPUs with MirroredStrategy", gpus)
        return tf.distribute.MirroredStrategy()
    log.info("training on %s", "1 GPU" if gpus else "CPU")
    return tf.distribute.get_strategy()


def chief_value(strategy: Any, value: int) -> int:
    """The chief's value of an integer, the same on every worker (a collective sum in which only the
    first replica of worker 0 counts), so workers can never go on with different values."""
    import tensorflow as tf

    local = tf.constant(float(value), tf.float32)  # collectives on every device support float32

    def contribution() -> Any:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.where(tf.equal(replica, 0), local, tf.zeros_like(local))

    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(contribution), axis=None)
    return round(float(total.numpy()))


def sum_over_workers(strategy: Any, local: Any) -> Any:
    """A float vector summed over every worker, each counting its own (this worker's replicas') total once.

    Replica ids run worker by worker, so the first local replica of each worker is the one whose id is a
    multiple of the local replica count."""
    import numpy as np
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return np.asarray(local, dtype=np.float64)  # one worker: nothing to gather
    local_replicas = max(1, len(strategy.extended.worker_devices))
    value = tf.constant(np.asarray(local, dtype=np.float32))

    def contribution() -> Any:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.where(tf.equal(replica % local_replicas, 0), value, tf.zeros_like(value))

    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(contribution), axis=None)
    return np.asarray(total.numpy(), dtype=np.float64)


STARTUP_TIMEOUT_ENV = "TRAINER_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT = 900.0


def start_watchdog(cluster: Cluster, report: Callable[[str | None], None] | None,
                   env: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """End the process if the workers have not all met (their first collective) within the start-up timeout.

    TensorFlow waits for missing peers without a limit, and holds the interpreter while it waits: a worker
    whose peers stay Pending (no GPU free) or will never come (a chief that found the training finished and
    completed it alone) would hold its GPU until the Job's deadline, deaf even to SIGTERM. So the failure is
    reported beforehand (report(message)), and faulthandler's own thread, which needs no interpreter, ends
    the process (exit 1, retried by the Job; the retry reads the checkpoint again). The returned function
    disarms it once the workers met, and withdraws the report (report(None))."""
    if not cluster.multi_worker or report is None:
        return None
    try:
        seconds = float(env.get(STARTUP_TIMEOUT_ENV) or DEFAULT_STARTUP_TIMEOUT)
    except ValueError:
        raise ConfigError(f"{STARTUP_TIMEOUT_ENV} must be a number of seconds, got {env[STARTUP_TIMEOUT_ENV]!r}") \
            from None
    if not 0 < seconds < 1e7:
        raise ConfigError(f"{STARTUP_TIMEOUT_ENV} must be above 0 seconds, got {seconds:g}")
    report(f"worker {cluster.index} of {cluster.workers}: the workers did not all meet within {seconds:g} s "
           f"({STARTUP_TIMEOUT_ENV}): a peer is pending or gone; retry: the workers resume from the checkpoint")
    faulthandler.dump_traceback_later(seconds, exit=True)

    def disarm() -> None:
        faulthandler.cancel_dump_traceback_later()
        report(None)

    return disarm


def wait_for_all(strategy: Any) -> None:
    """Return once every worker got here. After the last epoch this keeps the other workers from leaving
    before the chief has recorded it: a chief restarted after that finds the training finished and
    completes it alone, instead of waiting for workers that are gone."""
    chief_value(strategy, 0)


@contextmanager
def peer_failures_as_transient(cluster: Cluster) -> Iterator[None]:
    """A worker that died or cannot be reached surfaces in the others as one of these errors: the Job
    should retry all of them (exit 75) and they resume from the checkpoint."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as exc:
        if not cluster.multi_worker:
            raise
        # TensorFlow prefixes the message with the failing op's name in {{...}}: noise to a reader.
        text = _OP_PREFIX.sub("", exc.message or "").strip() or type(exc).__name__
        first_line = text.splitlines()[0][:300]
        raise TransientError(
            f"worker {cluster.index} of {cluster.workers} lost a peer worker ({type(exc).__name__}: {first_line}); "
            "retry: the workers resume from the checkpoint"
        ) from None
