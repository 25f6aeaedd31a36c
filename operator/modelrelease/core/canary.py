"""Replica split between stable and canary.

Rule: canary = ceil(total * weight / 100), so any non-zero weight gets at least one canary pod
(weight 10 of 3 replicas -> 1 canary, 2 stable). Below weight 100 the stable keeps at least one pod
(weight 90 of 3 -> 2 canary, 1 stable), so a partial weight always serves both tracks.
stable + canary == total always: a canary never adds pods (no doubled GPU pods), not even while
promoting or rolling back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int


def split(total: int, weight: int) -> Split:
    if total < 0 or not 0 <= weight <= 100:
        raise ValueError(f"cannot split {total} replicas at weight {weight}")
    if weight == 0:
        return Split(stable=total, canary=0)
    if weight == 100:
        return Split(stable=0, canary=total)
    canary = math.ceil(total * weight / 100)
    if total >= 2:
        canary = min(canary, total - 1)
    return Split(stable=total - canary, canary=canary)


def _batch(total: int) -> int:
    """Replicas that move between the tracks in one pass: a quarter, at least one."""
    return max(1, math.ceil(total / 4))


def handover(total: int, stable_ready_at_new_version: int) -> Split:
    """One batch of a promotion: move up to a quarter of the replicas from canary to stable.

    The stable Deployment already runs the new version; it takes replicas only as fast as they
    become ready, so serving capacity never drops by more than one batch and never doubles.
    """
    batch = _batch(total)
    stable = min(total, max(0, stable_ready_at_new_version) + batch)
    return Split(stable=stable, canary=total - stable)


def withdraw(total: int, stable_ready_at_stable_version: int, canary_now: int) -> Split:
    """One pass of a rollback: the mirror of a promotion batch, and the canary never grows.

    The canary gives up at most what the stable has ready plus one batch (a quarter), so a canary at
    weight 100 is not cut to nothing while the stable has no ready pod: capacity never drops by more
    than one batch. A small canary goes at once.
    """
    batch = _batch(total)
    uncovered = max(0, total - max(0, stable_ready_at_stable_version) - batch)
    canary = min(max(0, canary_now), uncovered)
    return Split(stable=total - canary, canary=canary)
