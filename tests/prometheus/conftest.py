"""A real Prometheus per test session: one scraping live fake model servers, one serving recorded history.

Needs /usr/bin/prometheus and /usr/bin/promtool (Debian: apt-get install -y prometheus). Missing
binaries fail the session loudly instead of skipping it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from modelrelease.adapters.prometheus import PrometheusConnection, PrometheusProvider
from modelrelease.core.measurement import ReleaseVariables
from modelrelease_local.prometheus import PrometheusProcess, ScrapeTarget, create_blocks_from_openmetrics
from tests.prometheus import history_data
from tests.prometheus.fake_modelserver import Behaviour, TrackExporter, TrafficDriver, Workload

LIVE_INTERVAL = timedelta(seconds=5)
SCRAPE_INTERVAL = 1.0

# Each live test owns a model name, so scenarios never disturb each other's series.
LIVE_SCENARIOS: dict[str, tuple[Behaviour, Behaviour]] = {
    "live-healthy": (Behaviour(), Behaviour()),
    "live-errors": (Behaviour(), Behaviour()),  # the test raises the canary's error share itself
    "live-slow": (Behaviour(), Behaviour(latency_seconds=0.2)),
    "live-quiet": (Behaviour(), Behaviour(requests_per_second=1.0)),
    "live-restart": (Behaviour(), Behaviour()),
}


@dataclass
class Live:
    prometheus: PrometheusProcess
    provider: PrometheusProvider
    stable: TrackExporter
    canary: TrackExporter
    workloads: dict[str, tuple[Workload, Workload]]

    def variables(self, model: str) -> ReleaseVariables:
        return ReleaseVariables("rel", "default", model, "v2", "v1", LIVE_INTERVAL)

    def targets(self) -> list[ScrapeTarget]:
        return [ScrapeTarget(self.stable.address), ScrapeTarget(self.canary.address)]


@dataclass
class History:
    prometheus: PrometheusProcess
    provider: PrometheusProvider

    @staticmethod
    def variables(model: str) -> ReleaseVariables:
        return ReleaseVariables(
            "rel", "default", model, history_data.VERSIONS["canary"], history_data.VERSIONS["stable"],
            timedelta(seconds=history_data.INTERVAL_SECONDS),
        )


@pytest.fixture(scope="session", autouse=True)
def prometheus_binaries() -> None:
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found; install them with: apt-get install -y prometheus")


@pytest.fixture(scope="session")
def exporters() -> Iterator[tuple[TrackExporter, TrackExporter, dict[str, tuple[Workload, Workload]]]]:
    stable, canary = TrackExporter("stable"), TrackExporter("canary")
    driver = TrafficDriver()
    workloads = {
        model: (driver.add(stable, model, "v1", s), driver.add(canary, model, "v2", c))
        for model, (s, c) in LIVE_SCENARIOS.items()
    }
    driver.start()
    yield stable, canary, workloads
    driver.stop()
    stable.stop()
    canary.stop()


def provider_for(prometheus: PrometheusProcess, timeout: float = 5.0) -> PrometheusProvider:
    return PrometheusProvider(PrometheusConnection(prometheus.url, timeout_seconds=timeout))


@pytest.fixture(scope="session")
def live(exporters, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    stable, canary, workloads = exporters
    prometheus = PrometheusProcess(
        tmp_path_factory.mktemp("prometheus-live"),
        targets=[ScrapeTarget(stable.address), ScrapeTarget(canary.address)],
        scrape_interval=SCRAPE_INTERVAL,
    )
    prometheus.start()
    provider = provider_for(prometheus)
    yield Live(prometheus, provider, stable, canary, workloads)
    provider.close()
    prometheus.stop()


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    workdir = tmp_path_factory.mktemp("prometheus-history")
    data_dir = workdir / "data"
    create_blocks_from_openmetrics(history_data.write(workdir / "history.om"), data_dir)
    # The recorded blocks are far in the past; a long retention keeps them from being deleted.
    prometheus = PrometheusProcess(workdir, data_dir=data_dir, retention="100y")
    prometheus.start()
    provider = provider_for(prometheus)
    yield History(prometheus, provider)
    provider.close()
    prometheus.stop()
