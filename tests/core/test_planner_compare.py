"""Whole releases judged by statistical comparisons and dry-run checks, in the pure planner."""

from __future__ import annotations

from modelrelease.core.analysis import ComparisonInput, Measurement
from tests.core.world import HEALTHY, World, base_spec

ACCURACY = {"name": "accuracy", "preset": "online-accuracy",
            "compare": {"test": "proportions", "direction": "decrease", "minEffect": 0.03}}


def _spec(*checks: dict) -> dict:
    spec = base_spec()
    spec["analysis"]["checks"] = [{"name": "errors", "preset": "error-rate"}, *checks]
    return spec


def _accuracy(canary: float, stable: float = 0.9, trials: float = 5000) -> Measurement:
    return Measurement("accuracy", comparison=ComparisonInput(
        canary_rate=canary, stable_rate=stable, canary_trials=trials, stable_trials=9 * trials))


def test_a_compared_regression_rolls_back_naming_the_check_and_its_p_value():
    world = World.of(_spec(ACCURACY), metrics={**HEALTHY, "accuracy": _accuracy(0.9)})
    world.run_until({"Progressing"})
    world.metrics["accuracy"] = _accuracy(0.85)
    world.run_until({"RolledBack"})
    failure = world.status.failure
    assert failure.reason == "AnalysisFailed" and failure.check == "accuracy"
    assert "canary lower than stable by 5 points" in failure.message and "p=" in failure.message
    [record] = [c for c in world.status.analysis.checks if c.name == "accuracy"]
    assert record.comparison is not None and record.comparison.p_value < record.comparison.alpha


def test_equal_accuracy_compared_releases_in_full():
    world = World.of(_spec(ACCURACY), metrics={**HEALTHY, "accuracy": _accuracy(0.9)})
    world.run_until({"Released"})
    assert [r.phase for r in world.status.stages] == ["Succeeded"] * 3


def test_too_little_traffic_for_the_comparison_pauses_saying_how_much_is_needed():
    world = World.of(_spec(ACCURACY), metrics={**HEALTHY, "accuracy": _accuracy(0.9, trials=30)})
    world.run_until({"Paused"})
    assert world.status.pause_reason == "InconclusiveAnalysis"
    assert "need" in world.status.message and "canary samples" in world.status.message


def test_a_failing_dry_run_check_never_rolls_back_or_pauses():
    dry = {**ACCURACY, "dryRun": True}
    world = World.of(_spec(dry), metrics={**HEALTHY, "accuracy": _accuracy(0.5, trials=30)})
    world.run_until({"Progressing"})
    world.metrics["accuracy"] = _accuracy(0.5)
    world.wait(30)
    world.step()
    assert any(c.name == "accuracy" and c.dry_run and c.verdict == "Fail" for c in world.status.analysis.checks)
    world.run_until({"Released"})
    assert world.status.failure is None
    assert [r.phase for r in world.status.stages] == ["Succeeded"] * 3
