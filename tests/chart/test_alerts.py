"""The chart's alerts (files/alerts.yaml): promtool checks and unit-tests them, the PrometheusRule ships them.

Runs the real promtool (Debian's prometheus package; `make test` installs it). A missing promtool fails.
"""

from __future__ import annotations

import copy
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from modelrelease import metrics
from tests.chart.monitoring_crds import MONITORING_CRDS
from tests.chart.promql_names import metric_names, unknown_metrics
from tests.chart.rendering import CHART, HelmError, render

ALERTS = CHART / "files" / "alerts.yaml"
UNIT_TESTS = pathlib.Path(__file__).with_name("alerts_test.yaml")
EXPECTED_ALERTS = {"ModelReleaseRolledBack", "ModelReleasePausedTooLong", "ModelReleaseTrainingPastDeadline",
                   "ModelReleaseOperatorReconcileErrors"}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found; install it with: apt-get install -y prometheus (or `make prometheus`)")
    return found


def run(promtool: str, *args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_the_rule_file_passes_promtool_check(promtool: str):
    done = run(promtool, "check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in done.stdout
    assert {rule["alert"] for rule in rules()} == EXPECTED_ALERTS


def test_the_unit_tests_pass(promtool: str):
    done = run(promtool, "test", "rules", UNIT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    # A rule file that is not found is only a warning, after which every `exp_alerts: []` passes.
    assert "WARNING" not in done.stdout + done.stderr and "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet():
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for alert in EXPECTED_ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert} is never expected to fire"
        assert any(not case["exp_alerts"] for case in mine), f"{alert} is never expected to stay quiet"


def test_a_wrong_expectation_fails(promtool: str, tmp_path: pathlib.Path):
    # The unit tests compare what fires: the same file with one label changed must fail.
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(ALERTS)]
    firing = next(case for test in tests["tests"] for case in test["alert_rule_test"]
                  if case["alertname"] == "ModelReleaseTrainingPastDeadline" and case["exp_alerts"])
    firing["exp_alerts"][0]["exp_labels"]["stage"] = "another"
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(yaml.safe_dump(tests))
    done = run(promtool, "test", "rules", broken)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_alerts_read_only_the_operators_metrics():
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert not unknown_metrics(names), f"{rule['alert']} reads {unknown_metrics(names)}, not in METRIC_NAMES"
    read = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert {"modelrelease_rollbacks_total", "modelrelease_release_phase", "modelrelease_training_job_running_seconds",
            "modelrelease_training_job_deadline_seconds", "modelrelease_reconcile_passes_total"} == read
    assert read <= set(metrics.METRIC_NAMES)


# The PrometheusRule.

def rendered_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = render({"metrics": {"prometheusRule": {"enabled": True, **values}}}, crds=MONITORING_CRDS)
    rule = rendered.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == rendered.namespace
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def test_the_prometheus_rule_is_the_file_by_default(promtool: str, tmp_path: pathlib.Path):
    groups = rendered_groups({})
    assert groups == yaml.safe_load(ALERTS.read_text())["groups"]
    # Helm left the alert templates ({{ $labels.release }}) alone: promtool still accepts what it rendered.
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text(yaml.safe_dump({"groups": groups}))
    done = run(promtool, "check", "rules", shipped)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "{{ $labels.release }}" in groups[0]["rules"][0]["annotations"]["summary"]


def test_values_change_the_durations_and_labels(promtool: str, tmp_path: pathlib.Path):
    groups = rendered_groups({"pausedFor": "2h", "reconcileErrorsFor": "15m", "labels": {"release": "prometheus"},
                              "additionalRuleLabels": {"team": "ml", "severity": "page"}})
    expected = copy.deepcopy(yaml.safe_load(ALERTS.read_text())["groups"])
    for rule in expected[0]["rules"]:
        rule["labels"] = {**rule["labels"], "team": "ml", "severity": "page"}
        if rule["alert"] == "ModelReleasePausedTooLong":
            rule["for"] = "2h"
        if rule["alert"] == "ModelReleaseOperatorReconcileErrors":
            rule["for"] = "15m"
    assert groups == expected
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text(yaml.safe_dump({"groups": groups}))
    assert run(promtool, "check", "rules", shipped).returncode == 0


def test_the_rule_labels_select_it_for_prometheus():
    rendered = render({"metrics": {"prometheusRule": {"enabled": True, "namespace": "monitoring",
                                                      "labels": {"release": "prometheus"}}}}, crds=MONITORING_CRDS)
    metadata = rendered.one("PrometheusRule")["metadata"]
    assert metadata["namespace"] == "monitoring" and metadata["labels"]["release"] == "prometheus"


def test_a_duration_prometheus_cannot_read_is_refused():
    with pytest.raises(HelmError, match="pausedFor"):
        render({"metrics": {"prometheusRule": {"enabled": True, "pausedFor": "30 minutes"}}}, crds=MONITORING_CRDS)


def test_rules_need_the_metrics():
    with pytest.raises(HelmError, match=r"needs metrics\.enabled"):
        render({"metrics": {"enabled": False, "prometheusRule": {"enabled": True}}}, crds=MONITORING_CRDS)
