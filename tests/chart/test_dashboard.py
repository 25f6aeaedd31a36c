"""The Grafana dashboard (files/dashboard.json): every query is PromQL a real Prometheus accepts and answers.

A real Prometheus (Debian's 2.42) scrapes the operator's own metric objects (modelrelease.metrics, filled
in this process through the operator's helpers) and answers each panel target and each variable's query,
with the Grafana variables replaced by `.*` (All) and by one concrete value. A 400 (or any error) fails,
and so does an "All" query that finds nothing. Every metric name in the dashboard must be in
modelrelease.metrics.METRIC_NAMES, and the dashboard uses every one of them.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from modelrelease import metrics
from modelrelease.api.status import ModelReleaseStatus
from modelrelease_local.ports import free_port
from modelrelease_local.prometheus import PrometheusProcess, ScrapeTarget
from tests.chart.promql_names import metric_names, unknown_metrics
from tests.chart.rendering import CHART, render

DASHBOARD_FILE = CHART / "files" / "dashboard.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
# Grafana's own variables, as a short time range would set them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
# The dashboard's variables: "All" (their allValue) and one value the test data has.
ALL = {"namespace": ".*", "release": ".*", "check": ".*"}
ONE = {"namespace": "ml", "release": "digits", "check": "error-rate"}
RELEASES = {("ml", "digits"): ("Progressing", 20), ("ml", "vision"): ("RolledBack", 0),
            ("team-b", "ranker"): ("Paused", 50)}


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in DASHBOARD["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # inside collapsed rows
    return [panel for panel in found if panel["type"] != "row"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{panel['title']} [{target['refId']}]", target) for panel in panels() for target in panel["targets"]]


def variables() -> list[dict[str, Any]]:
    return [variable for variable in DASHBOARD["templating"]["list"] if variable["type"] == "query"]


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return {**BUILTINS, **values}[name]

    done = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)
    assert "$" not in done, done
    return done


def label_values_query(definition: str) -> tuple[str, str]:
    """Grafana's label_values(selector, label) as the PromQL that finds the same values."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
    assert match, definition
    return f"count by ({match.group(2)}) ({match.group(1)})", match.group(2)


# The dashboard as a document.

def test_every_panel_queries_prometheus_through_the_datasource_variable():
    ids = [panel["id"] for panel in DASHBOARD["panels"]] + [p["id"] for p in panels() if p not in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert DASHBOARD["templating"]["list"][0] == {**DASHBOARD["templating"]["list"][0], "name": "datasource",
                                                  "type": "datasource", "query": "prometheus"}
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_every_variable_in_a_query_is_defined():
    defined = {variable["name"] for variable in DASHBOARD["templating"]["list"]}
    used = {name for _, target in targets() for name in re.findall(r"\$\{?(\w+)", target["expr"])}
    used |= {name for variable in variables() for name in re.findall(r"\$\{?(\w+)", variable["definition"])}
    assert used - set(BUILTINS) <= defined
    for variable in variables():
        assert variable["allValue"] == ".*" and variable["includeAll"] and variable["multi"], variable["name"]
        assert variable["query"]["query"] == variable["definition"]
    for panel in panels():
        if "repeat" in panel:
            assert panel["repeat"] in defined


def test_the_dashboard_reads_every_operator_metric_and_nothing_else():
    read: set[str] = set()
    for name, target in targets():
        names = metric_names(substitute(target["expr"], ALL))
        assert names, name
        assert not unknown_metrics(names), f"{name} reads {unknown_metrics(names)}, not in METRIC_NAMES"
        read |= names
    for variable in variables():
        query, _ = label_values_query(substitute(variable["definition"], ALL))
        assert not unknown_metrics(metric_names(query)), variable["name"]
    # The base names (a histogram through its _bucket, _sum or _count series).
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) if name not in metrics.METRIC_NAMES else name for name in read}
    assert bases == set(metrics.METRIC_NAMES)


def test_the_check_panels_compare_canary_and_stable():
    checks = [p for p in panels() if any("modelrelease_analysis_check_value" in t["expr"] for t in p["targets"])]
    assert [panel["repeat"] for panel in checks] == ["check"]
    assert "track" in checks[0]["targets"][0]["expr"] and "{{track}}" in checks[0]["targets"][0]["legendFormat"]
    assert "bounds are not exported" in checks[0]["description"]


# Every query, answered by a real Prometheus.

def fill(values: dict[tuple[str, str], tuple[str, int]]) -> None:
    """Series as the operator's passes set them, through its own helpers where it has them."""
    for (namespace, release), (phase, weight) in values.items():
        metrics.record_phase(namespace, release, ModelReleaseStatus(phase=phase, canary_weight=weight))
    metrics.count_phases(phase for phase, _ in values.values())
    for check, canary, stable in (("error-rate", 0.011, 0.010), ("p99-latency", 0.21, 0.18)):
        metrics.CHECK_VALUE.labels("ml", "digits", check, "canary").set(canary)
        metrics.CHECK_VALUE.labels("ml", "digits", check, "stable").set(stable)
        metrics.ANALYSIS_RUNS.labels("ml", "digits", check, "Pass").inc(3)
    metrics.ANALYSIS_RUNS.labels("ml", "vision", "error-rate", "Fail").inc()
    metrics.ROLLBACKS.labels("ml", "vision", "AnalysisFailed").inc()
    metrics.ROLLBACKS.labels("ml", "digits", "Aborted").inc()
    metrics.TRAINING_RUNNING.labels("ml", "digits", "grow").set(600)
    metrics.TRAINING_DEADLINE.labels("ml", "digits", "grow").set(3600)
    metrics.TRAINING_DURATION.labels("succeeded").observe(420)
    metrics.TRAINING_DURATION.labels("failed").observe(35)
    for result in ("ok", "conflict", "throttled", "error"):
        metrics.RECONCILE_PASSES.labels(result).inc()
    metrics.RECONCILE_DURATION.observe(0.02)
    metrics.API_REQUESTS.labels("get", "200").inc()
    metrics.API_REQUESTS.labels("patch", "409").inc()


def query(prometheus: PrometheusProcess, expr: str) -> dict[str, Any]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            body: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as error:
        pytest.fail(f"Prometheus answered {error.code} to {expr!r}: {error.read().decode(errors='replace')}")
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not found; install it with: apt-get install -y prometheus (or `make prometheus`)")
    registry = CollectorRegistry()  # the operator's series only, without the process and Python collectors
    for collector in vars(metrics).values():
        if isinstance(collector, Counter | Gauge | Histogram):
            registry.register(collector)
    fill(RELEASES)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    process = PrometheusProcess(tmp_path_factory.mktemp("prometheus-dashboard"), scrape_interval=1.0,
                                targets=[ScrapeTarget(f"127.0.0.1:{port}", job="model-release-operator")])
    process.start()
    try:
        # Three scrapes of everything: rate() and increase() over the ranges below have samples to use.
        deadline = time.monotonic() + 60
        while not query(process, "min(count_over_time(modelrelease_release_phase[1m])) >= 3")["result"]:
            assert time.monotonic() < deadline, process.log_tail()
            time.sleep(0.5)
        yield process
    finally:
        process.stop()
        server.shutdown()
        thread.join(timeout=10)
        for namespace, release in RELEASES:
            metrics.forget(namespace, release)


@pytest.mark.parametrize(("name", "target"), targets(), ids=[name for name, _ in targets()])
def test_prometheus_answers_every_panel_query(prometheus: PrometheusProcess, name: str, target: dict[str, Any]):
    everything = query(prometheus, substitute(target["expr"], ALL))
    assert everything["resultType"] == "vector" and everything["result"], f"{name}: no series for All"
    query(prometheus, substitute(target["expr"], ONE))


@pytest.mark.parametrize("variable", variables(), ids=[variable["name"] for variable in variables()])
def test_prometheus_answers_every_variable_query(prometheus: PrometheusProcess, variable: dict[str, Any]):
    expr, label = label_values_query(substitute(variable["definition"], ALL))
    found = {series["metric"][label] for series in query(prometheus, expr)["result"]}
    assert found >= {ONE[variable["name"]]}, found


def test_the_panels_show_what_the_operator_exported(prometheus: PrometheusProcess):
    def values(title: str, variables: dict[str, str], ref: str = "A") -> dict[tuple[str, ...], float]:
        target = next(t for name, t in targets() if name == f"{title} [{ref}]")
        result = query(prometheus, substitute(target["expr"], variables))["result"]
        return {tuple(sorted(series["metric"].items())): float(series["value"][1]) for series in result}

    assert values("Canary weight", ONE) == {(("namespace", "ml"), ("release", "digits")): 20.0}
    assert set(values("Phase per release", ALL)) == {
        (("namespace", ns), ("phase", phase), ("release", release)) for (ns, release), (phase, _) in RELEASES.items()}
    assert values("Check $check: canary vs stable", ONE) == {
        (("namespace", "ml"), ("release", "digits"), ("track", "canary")): 0.011,
        (("namespace", "ml"), ("release", "digits"), ("track", "stable")): 0.010}
    assert values("Training: running vs deadline", ONE, "B") == {
        (("namespace", "ml"), ("release", "digits"), ("stage", "grow")): 3600.0}
    assert set(values("Releases by phase", ALL)) >= {(("phase", "Paused"),), (("phase", "RolledBack"),)}


# The ConfigMap that ships it.

def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar():
    assert "ConfigMap" not in render().kinds  # off by default
    rendered = render({"metrics": {"dashboard": {"enabled": True, "namespace": "grafana",
                                                 "annotations": {"grafana_folder": "ML"}}}})
    configmap = rendered.one("ConfigMap")
    kubernetes_validate.validate(configmap, "1.33", strict=True)
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert list(configmap["data"]) == ["model-release-operator.json"]
    assert json.loads(configmap["data"]["model-release-operator.json"]) == DASHBOARD
