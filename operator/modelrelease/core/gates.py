"""Offline gates: a trained model's metrics against value bounds and against the stable model."""

from __future__ import annotations

import math

from modelrelease.api.spec import LOWER_IS_BETTER, Gate
from modelrelease.api.status import GateResult


def evaluate_gate(gate: Gate, metrics: dict[str, float], stable: dict[str, float] | None) -> list[GateResult]:
    """One result per bound the gate sets, so status shows exactly which bound failed."""
    value = metrics.get(gate.metric)
    results: list[GateResult] = []

    def add(bound: str, ok: bool | None, message: str = "") -> None:
        verdict = "Skipped" if ok is None else ("Pass" if ok else "Fail")
        results.append(GateResult(metric=gate.metric, value=value, bound=bound, verdict=verdict, message=message))

    if value is None or not math.isfinite(value):
        add("reported", False, f"the trainer reported no usable {gate.metric}")
        return results
    if gate.min is not None:
        add(f">= {gate.min:g}", value >= gate.min)
    if gate.max is not None:
        add(f"<= {gate.max:g}", value <= gate.max)
    lower_better = gate.metric in LOWER_IS_BETTER
    for limit, relative in ((gate.max_drop, False), (gate.max_relative_drop, True)):
        if limit is None:
            continue
        reference = (stable or {}).get(gate.metric)
        if reference is None:
            add(_change_bound(gate.metric, limit, relative, lower_better, None), None,
                "no stable model to compare with yet")
            continue
        allowed = reference * limit if relative else limit
        worst = reference + allowed if lower_better else reference - allowed
        ok = value <= worst if lower_better else value >= worst
        add(_change_bound(gate.metric, limit, relative, lower_better, reference), ok)
    return results


def _change_bound(metric: str, limit: float, relative: bool, lower_better: bool, reference: float | None) -> str:
    sign = "+" if lower_better else "-"
    op = "<=" if lower_better else ">="
    amount = f"{limit:g} x stable" if relative else f"{limit:g}"
    text = f"{op} stable.{metric} {sign} {amount}"
    return text if reference is None else f"{text} (stable {reference:g})"


def evaluate_gates(
    gates: list[Gate], metrics: dict[str, float], stable: dict[str, float] | None
) -> tuple[bool, list[GateResult]]:
    results = [r for gate in gates for r in evaluate_gate(gate, metrics, stable)]
    return all(r.verdict != "Fail" for r in results), results
