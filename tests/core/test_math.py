"""Table-driven: canary split, promotion handover, gates, analysis verdicts and counting."""

from __future__ import annotations

import math

import pytest

from modelrelease.api.spec import AnalysisCheck, AnalysisSpec, Gate
from modelrelease.api.status import AnalysisRecord
from modelrelease.core.analysis import Measurement, judge, tally
from modelrelease.core.canary import Split, handover, split, withdraw
from modelrelease.core.gates import evaluate_gates


@pytest.mark.parametrize(
    ("total", "weight", "stable", "canary"),
    [
        (10, 0, 10, 0),
        (10, 10, 9, 1),
        (10, 50, 5, 5),
        (10, 100, 0, 10),
        (3, 10, 2, 1),  # any non-zero weight gets a canary pod (ceil)
        (3, 50, 1, 2),
        (3, 90, 1, 2),  # below 100 the stable keeps a pod
        (2, 1, 1, 1),
        (2, 99, 1, 1),
        (1, 100, 0, 1),
        (7, 33, 4, 3),
    ],
)
def test_split(total, weight, stable, canary):
    assert split(total, weight) == (split(total, weight).__class__(stable, canary))


@pytest.mark.parametrize(("total", "weight"), [(10, -1), (10, 101), (-1, 50)])
def test_split_rejects_out_of_range(total, weight):
    with pytest.raises(ValueError):
        split(total, weight)


@pytest.mark.parametrize(
    ("total", "ready", "stable"),
    [(10, 0, 3), (10, 3, 6), (10, 9, 10), (10, 10, 10), (1, 0, 1), (4, 1, 2)],
)
def test_handover_moves_one_batch_past_what_is_ready(total, ready, stable):
    result = handover(total, ready)
    assert (result.stable, result.canary) == (stable, total - stable)


@pytest.mark.parametrize(
    ("total", "ready", "canary_now", "canary"),
    [
        (4, 0, 4, 3),  # weight 100, nothing stable ready yet: one batch (a quarter) moves, not all
        (4, 1, 3, 2),
        (4, 3, 1, 0),  # the stable covers all but one batch: the canary goes
        (10, 0, 10, 7),  # batches of 3 for 10 replicas
        (10, 5, 5, 2),  # weight 50: two passes
        (10, 9, 1, 0),  # weight 10: at once
        (10, 2, 1, 1),  # a broken stable does not make the canary grow
        (3, 5, 2, 0),  # more ready than wanted still ends the canary
        (3, 0, 0, 0),
    ],
)
def test_withdraw_moves_one_batch_and_never_grows_the_canary(total, ready, canary_now, canary):
    assert withdraw(total, ready, canary_now) == Split(stable=total - canary, canary=canary)


def _gate(**kw):
    return Gate.model_validate(kw)


@pytest.mark.parametrize(
    ("gate", "value", "stable", "verdicts"),
    [
        ({"metric": "accuracy", "min": 0.9}, 0.95, None, ["Pass"]),
        ({"metric": "accuracy", "min": 0.9}, 0.85, None, ["Fail"]),
        ({"metric": "accuracy", "max": 0.99}, 0.995, None, ["Fail"]),
        ({"metric": "f1", "maxDrop": 0.01}, 0.90, None, ["Skipped"]),
        ({"metric": "f1", "maxDrop": 0.01}, 0.90, 0.905, ["Pass"]),
        ({"metric": "f1", "maxDrop": 0.01}, 0.89, 0.905, ["Fail"]),
        ({"metric": "f1", "maxRelativeDrop": 0.1}, 0.81, 0.9, ["Pass"]),
        ({"metric": "f1", "maxRelativeDrop": 0.1}, 0.80, 0.9, ["Fail"]),
        ({"metric": "loss", "maxDrop": 0.05}, 0.34, 0.3, ["Pass"]),  # loss: worse means higher
        ({"metric": "loss", "maxDrop": 0.05}, 0.36, 0.3, ["Fail"]),
        ({"metric": "loss", "maxRelativeDrop": 0.1}, 0.20, 0.3, ["Pass"]),
        ({"metric": "accuracy", "min": 0.5, "maxDrop": 0.0}, 0.6, 0.7, ["Pass", "Fail"]),
    ],
)
def test_gates(gate, value, stable, verdicts):
    stable_metrics = None if stable is None else {gate["metric"]: stable}
    passed, results = evaluate_gates([_gate(**gate)], {gate["metric"]: value}, stable_metrics)
    assert [r.verdict for r in results] == verdicts
    assert passed == ("Fail" not in verdicts)


def test_gate_on_a_missing_metric_fails():
    passed, results = evaluate_gates([_gate(metric="recall", min=0.1)], {"accuracy": 1.0}, None)
    assert not passed and "no usable recall" in results[0].message


def _check(**kw):
    return AnalysisCheck.model_validate({"name": "c", **kw})


Q = 'sum(rate(x_total{track="{{ track }}"}[{{ interval }}]))'


@pytest.mark.parametrize(
    ("check", "measured", "verdict", "reason"),
    [
        ({"query": Q, "max": 0.05}, Measurement("c", canary=0.01), "Pass", "within"),
        ({"query": Q, "max": 0.05}, Measurement("c", canary=0.5), "Fail", "0.5 > 0.05"),
        ({"query": Q, "min": 0.9}, Measurement("c", canary=0.5), "Fail", "0.5 < 0.9"),
        ({"query": Q, "max": 0.05}, Measurement("c", canary=None), "Inconclusive", "no data"),
        ({"query": Q, "max": 0.05}, Measurement("c", canary=math.nan), "Inconclusive", "no data"),
        ({"query": Q, "max": 0.05}, Measurement("c", error="timeout"), "Error", "timeout"),
        ({"query": Q, "max": 0.05, "sampleQuery": Q}, Measurement("c", canary=0.0, samples=3),
         "Inconclusive", "waiting for traffic"),
        ({"query": Q, "maxRatio": 1.2}, Measurement("c", canary=0.11, stable=0.1), "Pass", "within"),
        ({"query": Q, "maxRatio": 1.2}, Measurement("c", canary=0.13, stable=0.1), "Fail", "canary/stable"),
        ({"query": Q, "maxRatio": 1.2}, Measurement("c", canary=0.13, stable=None), "Inconclusive", "stable"),
        ({"query": Q, "maxRatio": 1.2}, Measurement("c", canary=0.0, stable=0.0), "Pass", "within"),
        ({"query": Q, "maxRatio": 1.2}, Measurement("c", canary=0.1, stable=0.0), "Fail", "inf"),
        ({"query": Q, "minRatio": 0.95}, Measurement("c", canary=0.5, stable=0.9), "Fail", "< 0.95"),
        ({"preset": "error-rate"}, Measurement("c", canary=0.06), "Fail", "> 0.05"),  # preset default bound
        ({"preset": "error-rate", "max": 0.1}, Measurement("c", canary=0.06), "Pass", "within"),
    ],
)
def test_judge(check, measured, verdict, reason):
    result = judge(_check(**check), measured, min_sample_count=10)
    assert result.verdict == verdict and reason in result.reason


def _run(verdicts, **limits):
    spec = AnalysisSpec.model_validate(
        {"prometheus": {"url": "http://p"}, "checks": [{"name": "c", "query": Q, "max": 1}], **limits}
    )
    record, outcomes = AnalysisRecord(), []
    for i, verdict in enumerate(verdicts):
        measured = {
            "P": Measurement("c", canary=0.0),
            "F": Measurement("c", canary=5.0),
            "I": Measurement("c", canary=None),
            "E": Measurement("c", error="down"),
        }[verdict]
        record, outcome = tally(record, [judge(spec.checks[0], measured, 0)], spec, f"t{i}")
        outcomes.append(outcome)
    return record, outcomes


@pytest.mark.parametrize(
    ("verdicts", "limits", "last"),
    [
        ("F", {"failureLimit": 0}, "rollback"),
        ("F", {"failureLimit": 1}, "continue"),
        ("FPF", {"failureLimit": 1}, "rollback"),  # failures count per canary, not in a row
        ("III", {"inconclusiveLimit": 3}, "continue"),
        ("IIII", {"inconclusiveLimit": 3}, "pause"),
        ("IIPII", {"inconclusiveLimit": 2}, "continue"),  # inconclusive counts in a row
        ("EEEEE", {"consecutiveErrorLimit": 4}, "pause"),
        ("EEPEE", {"consecutiveErrorLimit": 2}, "continue"),
    ],
)
def test_tally(verdicts, limits, last):
    _, outcomes = _run(verdicts, **limits)
    assert outcomes[-1] == last
    assert "rollback" not in outcomes[:-1] or last == "rollback"


def test_errors_never_count_as_success():
    record, _ = _run("EEE", consecutiveErrorLimit=10)
    assert record.successes == 0 and not record.last_run_passed and record.consecutive_errors == 3


def test_relative_bounds_are_skipped_when_stable_serves_nothing():
    check = _check(query=Q, max=1.0, maxRatio=1.2)
    at_full_weight = judge(check, Measurement("c", canary=0.5, stable=None), 0, stable_serving=False)
    assert at_full_weight.verdict == "Pass" and "relative bounds skipped" in at_full_weight.reason
    assert judge(check, Measurement("c", canary=5.0, stable=None), 0, stable_serving=False).verdict == "Fail"
    assert judge(check, Measurement("c", canary=0.5, stable=None), 0).verdict == "Inconclusive"


def test_alternating_errors_and_quiet_traffic_still_pause():
    _, outcomes = _run("IEIEIEIE", inconclusiveLimit=3, consecutiveErrorLimit=3)
    assert "pause" in outcomes
