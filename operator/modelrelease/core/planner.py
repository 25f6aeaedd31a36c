"""The release planner: (spec, status, observations, now) -> actions, next status, when to look again.

Pure: it reads nothing and writes nothing; the runtime observes before and executes after.
Applying a plan and planning again on the result asks for nothing new (events are emitted only on
transitions, objects are created only when not observed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from modelrelease.api.labels import ANNOTATION_PAUSED
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import (
    MOVING_REPLICAS_PHASES,
    TERMINAL_PHASES,
    AnalysisRecord,
    ModelReleaseStatus,
    StageRecord,
)
from modelrelease.core import analysis, stages
from modelrelease.core.actions import adopt_present_requests, handle_actions
from modelrelease.core.draft import Draft
from modelrelease.core.measurement import AnalysisRun
from modelrelease.core.model import Observations, Plan
from modelrelease.core.naming import spec_hash
from modelrelease.core.requests import held_by_annotation
from modelrelease.core.serving import converge_serving, requeue_after, update_conditions


def plan(
    spec: ModelReleaseSpec,
    status: ModelReleaseStatus,
    observed: Observations,
    now: datetime,
    *,
    release: str,
    generation: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Plan:
    """``annotations`` are the release's own: requests (core.requests) and the pause hold."""
    draft = Draft(spec, status, observed, now, release, generation)
    requested = annotations or {}
    _follow_spec(draft, requested)
    _recover_from_invalid(draft)
    handle_actions(draft, requested)
    _follow_pause(draft, held_by_annotation(requested))
    _advance(draft)
    converge_serving(draft)
    update_conditions(draft)
    if draft.status.current_stage != draft.stage.name:
        draft.set(current_stage=draft.stage.name)
    draft.set(observed_generation=generation)
    return Plan(actions=draft.actions, status=draft.status, requeue_after=requeue_after(draft))


def fresh_records(spec: ModelReleaseSpec) -> list[StageRecord]:
    return [StageRecord(name=stage.name) for stage in spec.stages]


def _follow_spec(draft: Draft, annotations: Mapping[str, str]) -> None:
    digest = spec_hash(draft.spec)
    previous = draft.status.spec_hash
    if previous == digest:
        return
    if previous is not None:
        stages.stop_active_job(draft)
        draft.event(
            "SpecChanged",
            "the spec changed: the canary is withdrawn and the release starts again from stage "
            f"{draft.spec.stages[0].name} against the current stable model",
        )
    if previous is None:
        adopt_present_requests(draft, annotations)
    draft.set(
        spec_hash=digest,
        run=draft.status.run + 1,
        phase="Pending",
        stages=fresh_records(draft.spec),
        stage_index=0,
        step_index=0,
        step_started_at=None,
        canary=None,
        canary_weight=0,
        analysis=AnalysisRecord(),
        failure=None,
        pause_reason=None,
        message="starting",
    )


def _recover_from_invalid(draft: Draft) -> None:
    """The spec is valid again (the runtime never plans an invalid one): carry on where it was."""
    if draft.status.phase != "Invalid":
        return
    records = draft.status.stages
    if records and all(r.phase == "Succeeded" for r in records) and draft.status.canary is None:
        draft.set(phase="Released")
    else:
        draft.set(phase=stages.active_phase(draft))
    draft.set(message="the spec is valid again")
    draft.event("SpecValid", "the spec is valid again")


def _follow_pause(draft: Draft, held: bool) -> None:
    status = draft.status
    if status.phase in TERMINAL_PHASES or status.phase in MOVING_REPLICAS_PHASES:
        return
    paused = draft.spec.paused or held
    by = "spec.paused" if draft.spec.paused else f"the annotation {ANNOTATION_PAUSED}"
    if paused and status.phase != "Paused":
        draft.set(phase="Paused", message=f"paused by {by}")
        draft.event("Paused", f"the release is paused ({by})")
    elif not paused and status.phase == "Paused" and status.pause_reason is None:
        # A step restarts its wait after a pause, so a step never ends unobserved.
        draft.set(phase=stages.active_phase(draft), step_started_at=draft.now_iso, message="resumed")
        draft.event("Resumed", "the release resumed")


def _advance(draft: Draft) -> None:
    phase = draft.status.phase
    if phase in TERMINAL_PHASES or phase == "Paused":
        return
    if phase == "RollingBack":
        stages.finish_rollback_when_done(draft)
        return
    if phase == "Promoting":
        stages.finish_promotion_when_done(draft)
        return
    run = draft.observed.analysis
    if run is not None and draft.status.canary is not None and not _judge_analysis(draft, run):
        return
    route = draft.observed.route
    if route is not None and route.problem is not None and draft.status.canary is not None:
        return  # no step ends while the route cannot carry its weight (condition RouteReady says why)
    stages.advance_stage(draft)


def _judge_analysis(draft: Draft, run: AnalysisRun) -> bool:
    """Count this pass's analysis run; False when it ended the progression (rollback or pause)."""
    spec = draft.spec.analysis
    checks = {c.name: c for c in spec.checks}
    results = [
        analysis.judge(checks[m.check], m, spec.min_sample_count, run.request.stable_serving,
                       run=draft.status.analysis.runs + 1, comparisons=analysis.deciding_comparisons(spec.checks))
        for m in run.measurements()
        if m.check in checks
    ]
    if not results:
        return True
    record, outcome = analysis.tally(draft.status.analysis, results, spec, draft.now_iso)
    draft.set(analysis=record)
    if outcome == "rollback":
        failed = analysis.first_failure(results)
        assert failed is not None
        stages.roll_back(
            draft,
            "AnalysisFailed",
            f"check {failed.name} failed: {failed.reason} (bound {failed.bound}); "
            f"{record.failures} failed runs > failureLimit {spec.failure_limit}",
            check=failed.name,
            value=failed.value,
            bound=failed.bound,
        )
        return False
    if outcome == "pause":
        if record.inconclusive > spec.inconclusive_limit:
            reason = "InconclusiveAnalysis"
            why = f"{record.inconclusive} inconclusive runs > inconclusiveLimit {spec.inconclusive_limit}"
        else:
            reason = "AnalysisErrors"
            why = (f"{record.consecutive_errors} runs with query errors > "
                   f"consecutiveErrorLimit {spec.consecutive_error_limit}")
        last = "; ".join(f"{r.name}: {r.reason}" for r in results
                         if r.verdict not in ("Pass", "Skipped") and not r.dry_run)
        message = f"analysis paused: {why} ({last}); use actions.retry, promote or abort"
        draft.set(phase="Paused", pause_reason=reason, message=message)
        draft.event(reason, message, "Warning")
        return False
    return True
