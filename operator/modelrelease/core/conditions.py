"""Kubernetes-style conditions: lastTransitionTime moves only when the status flips."""

from __future__ import annotations

from modelrelease.api.status import Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    wanted = "True" if status else "False"
    current = next((c for c in conditions if c.type == type_), None)
    moved = current is None or current.status != wanted
    updated = Condition(
        type=type_,
        status=wanted,
        reason=reason,
        message=message,
        last_transition_time=now if moved or current is None else current.last_transition_time,
        observed_generation=generation,
    )
    if current == updated:
        return conditions
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: c.type)
