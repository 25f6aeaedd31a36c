"""The local Prometheus launcher: config, reload of scrape targets, stop and start."""

from __future__ import annotations

import pytest

from modelrelease_local.prometheus import PrometheusError, PrometheusProcess, ScrapeTarget, scrape_config
from tests.prometheus.analysis_helpers import poll
from tests.prometheus.conftest import Live, provider_for


def test_the_config_groups_targets_by_job_and_path() -> None:
    config = scrape_config(
        [ScrapeTarget("a:1"), ScrapeTarget("b:2", labels={"pod": "b"}), ScrapeTarget("c:3", metrics_path="/m")],
        scrape_interval=0.5,
    )
    assert config["global"] == {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "500ms"}
    assert config["scrape_configs"] == [
        {"job_name": "modelserver", "metrics_path": "/metrics",
         "static_configs": [{"targets": ["a:1"]}, {"targets": ["b:2"], "labels": {"pod": "b"}}]},
        {"job_name": "modelserver/m", "metrics_path": "/m", "static_configs": [{"targets": ["c:3"]}]},
    ]


def test_new_targets_are_scraped_after_a_reload(live: Live, tmp_path_factory: pytest.TempPathFactory) -> None:
    with PrometheusProcess(tmp_path_factory.mktemp("prometheus-reload"), scrape_interval=0.5) as prometheus:
        provider = provider_for(prometheus)
        assert provider.query("count(up)").note == "empty result"

        prometheus.set_targets([ScrapeTarget(live.canary.address, labels={"side": "canary"})])

        up = poll(lambda: provider.query('sum(up{side="canary"})'), lambda r: r.value == 1, "the new target up")
        assert up.value == 1
        provider.close()
    assert not prometheus.running


def test_a_server_that_cannot_start_says_why(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("prometheus-broken")
    broken = PrometheusProcess(workdir, extra_args=["--no-such-flag"])
    with pytest.raises(PrometheusError, match="no-such-flag"):
        broken.start(timeout=30)
    broken.stop()
