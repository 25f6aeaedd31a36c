"""Whole releases through the real operator process."""

from __future__ import annotations

from tests.operator.conftest import Harness, release_spec


def test_three_stage_release_to_promotion(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "Released")
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] * 3
    assert len(harness.jobs()) == 3
    assert [v["stage"] for v in status["history"]] == ["warmup", "full"]
    assert status["stable"]["stage"] == "full" and status.get("canary") is None
    stable, canary = harness.deployment("digits-stable"), harness.deployment("digits-canary")
    assert stable.spec.replicas == 4 and canary.spec.replicas == 0
    env = {e.name: e.value for e in stable.spec.template.spec.containers[0].env}
    assert env["MODEL_VERSION"] == status["stable"]["id"] and env["RELEASE_TRACK"] == "stable"
    harness.wait_events("TrainingStarted", "FirstRelease", "CanaryStarted", "StepAdvanced", "Promoting", "Released")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Degraded"] == "False"


def test_failed_gate_rolls_back_and_names_the_gate(harness: Harness):
    harness.training.accuracy["grow"] = 0.5
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "RolledBack")
    assert status["failure"]["reason"] == "GateFailed" and "accuracy" in status["failure"]["message"]
    assert status["stable"]["stage"] == "warmup"
    assert harness.deployment("digits-stable").spec.replicas == 4
    warning = [e for e in harness.wait_events("GateFailed") if e.reason == "GateFailed"]
    assert warning and warning[0].type == "Warning" and ">= 0.8" in warning[0].message


def test_failed_job_rolls_back_with_exit_code_and_message(harness: Harness):
    from modelrelease_local.outcomes import JobOutcome

    harness.training.failures["grow"] = JobOutcome.failed(
        65, '{"schemaVersion": 1, "ok": false, "stage": "grow", "error": "--data: no such file", "exitCode": 65}')
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "RolledBack")
    assert status["failure"]["reason"] == "TrainingFailed"
    assert "exit code 65" in status["failure"]["message"] and "no such file" in status["failure"]["message"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "TrainingFailed"


def test_oom_killed_training_says_so(harness: Harness):
    from modelrelease_local.outcomes import JobOutcome

    harness.training.failures["warmup"] = JobOutcome.oom_killed()
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "Failed")
    assert "OOMKilled" in status["failure"]["message"]


def test_failed_analysis_rolls_back_with_check_value_and_bound(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")
    harness.prometheus.set("error_rate", canary=0.4, stable=0.0)
    status = harness.wait_phase("digits", "RolledBack")
    failure = status["failure"]
    assert failure["reason"] == "AnalysisFailed" and failure["check"] == "errors"
    assert failure["value"] == 0.4 and failure["bound"] == "<= 0.05"
    assert harness.deployment("digits-canary").spec.replicas == 0
    assert harness.deployment("digits-stable").spec.replicas == 4
    assert any(e.reason == "AnalysisFailed" and "errors" in e.message for e in harness.wait_events("AnalysisFailed"))


def test_quiet_traffic_pauses_instead_of_promoting(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")
    harness.prometheus.set("requests", canary=1.0, stable=1.0)
    status = harness.wait_phase("digits", "Paused")
    assert status["pauseReason"] == "InconclusiveAnalysis" and "waiting for traffic" in status["message"]
    paused = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert paused["status"] == "True"


def test_prometheus_down_pauses_and_never_promotes(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")
    harness.prometheus.down = True
    status = harness.wait_phase("digits", "Paused")
    assert status["analysis"]["consecutiveErrors"] > 4 and status["analysis"]["successes"] >= 0
    assert status.get("canary") is not None and status["phase"] == "Paused"
