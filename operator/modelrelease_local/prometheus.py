"""Run a private Prometheus server: for tests, the analysis benchmark and the embedded demo.

A ``PrometheusProcess`` owns a config file, a data directory and a port on loopback. It can be stopped
and started again on the same port and data directory (the TSDB survives, as it would for a restarted
server in a cluster), and reloaded after its scrape targets change.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from modelrelease.adapters.prometheus import is_ready, request_reload
from modelrelease.promql.templates import format_range
from modelrelease_local.ports import free_port
from modelrelease_local.supervision import popen

DEFAULT_BINARY = "prometheus"


@dataclass(frozen=True)
class ScrapeTarget:
    address: str
    """host:port serving metrics."""
    job: str = "modelserver"
    labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels Prometheus attaches to every series of this target."""
    metrics_path: str = "/metrics"


def scrape_config(targets: Iterable[ScrapeTarget], scrape_interval: float) -> dict[str, Any]:
    """A Prometheus configuration that scrapes ``targets`` every ``scrape_interval`` seconds."""
    interval = format_range(scrape_interval)
    jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for target in targets:
        group: dict[str, Any] = {"targets": [target.address]}
        if target.labels:
            group["labels"] = dict(target.labels)
        jobs.setdefault((target.job, target.metrics_path), []).append(group)
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job if path == "/metrics" else f"{job}{path}", "metrics_path": path, "static_configs": groups}
            for (job, path), groups in jobs.items()
        ],
    }


class PrometheusError(RuntimeError):
    pass


class PrometheusProcess:
    """A Prometheus server process on loopback with its own config and data directory."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        targets: Sequence[ScrapeTarget] = (),
        scrape_interval: float = 1.0,
        port: int | None = None,
        host: str = "127.0.0.1",
        data_dir: Path | str | None = None,
        retention: str = "30d",
        web_config: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        """``web_config`` is Prometheus' --web.config.file content (TLS, basic auth); with TLS the
        readiness probe trusts the certificate file named in it, so use a self-signed one there."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.config_file = self.workdir / "prometheus.yml"
        self.log_file = self.workdir / "prometheus.log"
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.host = host
        self.port = port or free_port(host)
        self.retention = retention
        self.web_config = dict(web_config) if web_config is not None else None
        self.extra_args = list(extra_args)
        self.binary = binary or shutil.which(DEFAULT_BINARY) or DEFAULT_BINARY
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0
        """How many times a server was started: a new one has only the targets of its config file."""

    @property
    def url(self) -> str:
        scheme = "https" if self._tls_cert() else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server process last started (it may have exited since), None once stopped."""
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _tls_cert(self) -> str | None:
        tls = (self.web_config or {}).get("tls_server_config") or {}
        return tls.get("cert_file")

    def _verify(self) -> bool | str:
        return self._tls_cert() or True

    def write_config(self) -> None:
        self.config_file.write_text(yaml.safe_dump(scrape_config(self.targets, self.scrape_interval)))
        if self.web_config is not None:
            (self.workdir / "web.yml").write_text(yaml.safe_dump(self.web_config))

    def command(self) -> list[str]:
        args = [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
        ]
        if self.web_config is not None:
            args.append(f"--web.config.file={self.workdir / 'web.yml'}")
        return args + self.extra_args

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it is ready to answer queries."""
        if self.running:
            return
        self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._log is None:  # kept open across a restart after the server died by itself
            self._log = self.log_file.open("ab")
        # Own session: a Ctrl-C meant for the test runner should not reach the server mid-write. It dies
        # with this process, whatever ends it (see supervision.popen).
        self._process = popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PrometheusError(f"Prometheus exited with code {self._process.returncode}:\n{self.log_tail()}")
            if is_ready(self.url, timeout=1.0, verify=self._verify()):
                return
            time.sleep(0.1)
        raise PrometheusError(f"Prometheus was not ready within {timeout:g}s:\n{self.log_tail()}")

    def set_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Replace the scrape targets; a running server reloads them."""
        self.targets = list(targets)
        if self.running:
            self.reload()

    def reload(self) -> None:
        """Rewrite the config and make the running server apply it (raises if it rejects it)."""
        self.write_config()
        request_reload(self.url, verify=self._verify())

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully (SIGTERM: the TSDB is flushed to its write-ahead log); kill if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def create_blocks_from_openmetrics(
    openmetrics: Path | str, data_dir: Path | str, promtool: str | None = None
) -> None:
    """Load series with explicit timestamps into a data directory (``promtool tsdb create-blocks-from``).

    The text must be OpenMetrics: samples of one series in time order, families not interleaved, and
    a final ``# EOF`` line.
    """
    binary = promtool or shutil.which("promtool") or "promtool"
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [binary, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PrometheusError(f"promtool could not create blocks: {done.stderr.strip() or done.stdout.strip()}")
