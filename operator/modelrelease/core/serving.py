"""Desired serving state (stable and canary Deployments, the Service), conditions and requeue."""

from __future__ import annotations

from datetime import datetime

from modelrelease.api.base import parse_duration
from modelrelease.api.status import (
    ACTIVE_PHASES,
    CANARY_WITHDRAWN_PHASES,
    FAILURE_PHASES,
    MOVING_REPLICAS_PHASES,
    TRAINED_STAGE_PHASES,
    Condition,
    ModelVersion,
)
from modelrelease.core import canary, routing
from modelrelease.core.conditions import set_condition
from modelrelease.core.draft import Draft
from modelrelease.core.measurement import next_analysis_at
from modelrelease.core.model import ApplyDeployment, EnsureService, SetRoute, Track
from modelrelease.core.naming import serving_hash
from modelrelease.core.stages import step_ends_at


def _stable_ready_at(draft: Draft, version_id: str) -> int:
    """Ready pods of the stable Deployment once its template serves this version (0 until then)."""
    seen = draft.observed.deployments.get("stable")
    return seen.ready if seen is not None and seen.version == version_id else 0


def desired_serving(draft: Draft) -> dict[Track, tuple[ModelVersion | None, int]]:
    """Which version each track serves and with how many replicas, from the status alone
    (plus, while replicas move between the tracks, how far the stable Deployment has caught up)."""
    status = draft.status
    total = draft.spec.serving.replicas
    if status.stable is None:
        return {}
    if draft.spec.serving.traffic_routing is not None:
        return _routed_serving(draft)
    if status.phase == "Promoting" and status.canary is not None:
        split = canary.handover(total, _stable_ready_at(draft, status.canary.id))
        # A promotion only moves forward: right after a scale patch the stable reports nothing ready
        # (its controller has not seen the new generation yet), which must not hand replicas back.
        stable_seen = draft.observed.deployments.get("stable")
        held = stable_seen.replicas if stable_seen and stable_seen.version == status.canary.id else 0
        stable = max(split.stable, min(total, held))
        return {"stable": (status.canary, stable), "canary": (None, total - stable)}
    if status.canary is not None and status.phase not in CANARY_WITHDRAWN_PHASES:
        split = canary.split(total, status.canary_weight)
        return {"stable": (status.stable, split.stable), "canary": (status.canary, split.canary)}
    # No canary wanted (a rollback, a spec change, an undo): whatever canary still serves hands its
    # replicas back in batches, as fast as the stable has them ready.
    canary_seen = draft.observed.deployments.get("canary")
    canary_now = canary_seen.replicas if canary_seen else 0
    split = canary.withdraw(total, _stable_ready_at(draft, status.stable.id), canary_now)
    return {"stable": (status.stable, split.stable), "canary": (None, split.canary)}


def _routed_serving(draft: Draft) -> dict[Track, tuple[ModelVersion | None, int]]:
    """With traffic routing the route carries the split: the stable keeps every replica, the canary has
    canaryScale pods, and a canary on its way out goes at once, in the pass that set the route to the
    stable first (``converge_serving`` writes the route before any Deployment)."""
    status, spec = draft.status, draft.spec
    total = spec.serving.replicas
    assert status.stable is not None
    canary_seen = draft.observed.deployments.get("canary")
    leaving = 0 if routing.canary_may_go(spec, status, draft.now) else (canary_seen.replicas if canary_seen else 0)
    if status.phase == "Promoting" and status.canary is not None:
        # The stable rolls to the new version at full scale; the canary serves until it has.
        return {"stable": (status.canary, total), "canary": (None, leaving)}
    if status.canary is not None and status.phase not in CANARY_WITHDRAWN_PHASES:
        return {"stable": (status.stable, total), "canary": (status.canary, routing.canary_pods(spec, status))}
    return {"stable": (status.stable, total), "canary": (None, leaving)}


def _converge_route(draft: Draft) -> None:
    """The track Services, then the route, ahead of any Deployment change of this pass."""
    wanted = routing.desired_route(draft.spec, draft.status, draft.observed)
    seen = draft.observed.route
    if wanted is None or seen is None or draft.status.stable is None:
        return
    for track in ("stable", "canary"):
        if track not in draft.observed.track_services:
            draft.actions.append(EnsureService(track))  # type: ignore[arg-type]
    if seen.problem is None and seen.state != wanted:
        draft.actions.append(SetRoute(wanted))
    # When the canary last stopped getting anything: its pods go scaleDownDelay later (the clock also
    # starts after a restart, and for a route that cannot be used: nothing could be taken back there).
    let_go = not wanted.canary_reachable
    if let_go and draft.status.route_released_at is None:
        draft.set(route_released_at=draft.now_iso)
    elif not let_go and draft.status.route_released_at is not None:
        draft.set(route_released_at=None)


def converge_serving(draft: Draft) -> None:
    _converge_route(draft)
    settings = serving_hash(draft.spec)
    applies: list[tuple[int, ApplyDeployment]] = []
    for track, (version, replicas) in desired_serving(draft).items():
        seen = draft.observed.deployments.get(track)
        if seen is None:
            if replicas > 0 or track == "stable":
                applies.append((replicas, ApplyDeployment(track, version, replicas)))
            continue
        wrong_version = version is not None and seen.version != version.id
        # New serving settings (image, port, template) roll the pods in place, no retraining.
        stale = version is not None and seen.serving_hash != settings
        if wrong_version or stale or seen.replicas != replicas:
            applies.append((replicas - seen.replicas,
                            ApplyDeployment(track, version if wrong_version or stale else None, replicas, exists=True)))
    # The track that shrinks is written first: between the two writes (or if the operator dies
    # between them) the total is below serving.replicas, never above it (no doubled GPU pods).
    draft.actions.extend(action for _, action in sorted(applies, key=lambda pair: pair[0]))
    if draft.status.stable is not None and not draft.observed.service_exists:
        draft.actions.append(EnsureService())


def update_conditions(draft: Draft) -> None:
    status = draft.status
    now, gen = draft.now_iso, draft.generation
    conditions = status.conditions
    stable = status.stable
    conditions = set_condition(
        conditions, "Ready", stable is not None,
        "StableServing" if stable else "NoStableModel",
        f"{stable.name} serves as stable" if stable else "no model has been released yet", now, gen,
    )
    active = status.phase in ACTIVE_PHASES
    conditions = set_condition(conditions, "Progressing", active, status.phase, status.message, now, gen)
    failure = status.failure
    degraded = status.phase in FAILURE_PHASES and failure is not None
    conditions = set_condition(
        conditions, "Degraded", degraded,
        failure.reason if degraded and failure else "Healthy",
        failure.message if degraded and failure else "", now, gen,
    )
    paused = status.phase == "Paused"
    held_by = "PausedBySpec" if draft.spec.paused else "PausedByRequest"
    conditions = set_condition(
        conditions, "Paused", paused,
        (status.pause_reason or held_by) if paused else "NotPaused",
        status.message if paused else "", now, gen,
    )
    trained = [r for r in status.stages if r.job_name and r.phase in TRAINED_STAGE_PHASES]
    if trained:
        last = trained[-1]
        ok = last.version is not None
        conditions = set_condition(
            conditions, "TrainingSucceeded", ok,
            "JobSucceeded" if ok else "JobFailed",
            f"stage {last.name}: job {last.job_name}" + ("" if ok else f": {last.message}"), now, gen,
        )
    conditions = _route_condition(draft, conditions)
    if any(c.type == "InvalidSpec" for c in conditions):
        conditions = set_condition(conditions, "InvalidSpec", False, "Valid", "", now, gen)
    if conditions != status.conditions:
        draft.set(conditions=conditions)


def _route_condition(draft: Draft, conditions: list[Condition]) -> list[Condition]:
    """RouteReady, with traffic routing: whether the HTTPRoute can carry the release's weights. A Warning
    Event marks the moment it stops being usable, not every pass while it stays so."""
    route = draft.observed.route
    if draft.spec.serving.traffic_routing is None or route is None:
        return conditions
    ok = route.problem is None
    was = next((c for c in conditions if c.type == "RouteReady"), None)
    updated = set_condition(conditions, "RouteReady", ok, "RouteAccepted" if ok else "RouteInvalid",
                            f"HTTPRoute {route.name}" + ("" if ok else f": {route.problem}"), draft.now_iso,
                            draft.generation)
    if not ok and (was is None or was.status != "False"):
        draft.event("RouteInvalid", f"HTTPRoute {route.name}: {route.problem}", "Warning")
    return updated


def requeue_after(draft: Draft) -> float | None:
    status, spec, now = draft.status, draft.spec, draft.now
    if status.phase in MOVING_REPLICAS_PHASES or status.phase == "Pending":
        return 2.0  # replicas are moving, or a stage is about to start: look again soon
    goes = routing.canary_goes_at(spec, status)
    canary_seen = draft.observed.deployments.get("canary")
    pending_scale_down = goes is not None and goes > now and canary_seen is not None and canary_seen.replicas > 0
    if status.phase not in ACTIVE_PHASES:
        # Ended or held: only a change (spec, action, child object) wakes the release, or the end of a
        # let-go canary's scaleDownDelay (after an undo, say).
        return max(1.0, (goes - now).total_seconds()) if pending_scale_down and goes is not None else None
    moments: list[datetime] = []
    ends = step_ends_at(spec, status) if status.phase == "Progressing" else None
    if ends is not None:
        moments.append(ends)
    if status.canary is not None and spec.analysis.checks:
        moments.append(next_analysis_at(spec, status))
    if pending_scale_down and goes is not None:
        moments.append(goes)
    if status.phase == "Training":
        return min([15.0, *[max(1.0, (m - now).total_seconds()) for m in moments]])
    if not moments:
        return parse_duration(spec.analysis.interval).total_seconds()
    return max(1.0, min((m - now).total_seconds() for m in moments))
