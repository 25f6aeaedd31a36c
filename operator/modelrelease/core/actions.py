"""One-shot actions carried as request ids: each new id is handled once and recorded (see core.requests)."""

from __future__ import annotations

from collections.abc import Mapping

from modelrelease.api.status import (
    IN_FLIGHT_PHASES,
    RETRYABLE_PHASES,
    STEPPING_PHASES,
    AnalysisRecord,
    ModelVersion,
    StageRecord,
)
from modelrelease.core import stages
from modelrelease.core.draft import Draft
from modelrelease.core.requests import Request, record, requests_of, was_handled


def handle_actions(draft: Draft, annotations: Mapping[str, str]) -> None:
    fired: set[str] = set()
    for request in requests_of(draft.spec, annotations):
        if was_handled(draft.status, request):
            continue
        if request.kind in fired:
            # The same action from the spec and from an annotation at once: one is enough.
            outcome: str | None = f"another {request.label} request was handled in the same pass"
        else:
            fired.add(request.kind)
            outcome = _HANDLERS[request.kind](draft, request)
        source = "" if request.source == "spec" else " (annotation)"
        draft.set(**record(draft.status, request, "Ignored" if outcome else "Handled", outcome or "", draft.now_iso))
        if outcome:
            draft.event("ActionIgnored", f"{request.label} {request.id!r}{source} ignored: {outcome}", "Warning")
        else:
            draft.event("ActionHandled", f"{request.label} {request.id!r}{source} handled")


def adopt_present_requests(draft: Draft, annotations: Mapping[str, str]) -> None:
    """Request ids in a brand-new release were meant for an earlier object (a manifest re-applied
    by Argo CD, a copied example): record them as handled so they never fire on creation."""
    for request in requests_of(draft.spec, annotations):
        draft.set(**record(draft.status, request, "Ignored", "present when the release was created",
                           draft.now_iso))


def _abort(draft: Draft, request: Request) -> str | None:
    if draft.status.phase not in IN_FLIGHT_PHASES:
        return f"nothing to abort in phase {draft.status.phase}"
    stages.roll_back(draft, "Aborted", "aborted by request: canary withdrawn, stable on all replicas")
    return None


def _find_version(draft: Draft, wanted: str) -> ModelVersion | list[str]:
    kept = list(reversed(draft.status.history))
    exact = [v for v in kept if wanted in (v.id, v.name)]
    if exact:
        return exact[0]
    prefixed = {v.id: v for v in kept if v.id.split(":", 1)[-1].startswith(wanted.split(":", 1)[-1])}
    if len(prefixed) == 1:
        return next(iter(prefixed.values()))
    return [v.name for v in kept]


def _undo(draft: Draft, request: Request) -> str | None:
    wanted = request.to_version
    if not wanted:
        return "no version named; set the annotation request.modelrelease.io/undo-to as well"
    found = _find_version(draft, wanted)
    if isinstance(found, list):
        kept = ", ".join(found) or "none"
        return f"version {wanted!r} is not among the kept versions ({kept})"
    _stop_training(draft)
    restored = draft.release_version(found, restored=True)
    draft.set(canary=None, canary_weight=0, phase="Released", failure=None, pause_reason=None,
              step_started_at=None, message=f"restored {restored.name} as stable")
    draft.event("VersionRestored", f"{restored.name} restored as stable")
    return None


def _stop_training(draft: Draft) -> None:
    if stages.stop_active_job(draft):
        draft.set_record(phase="Failed", finished_at=draft.now_iso, message="stopped by request")


def _retry(draft: Draft, request: Request) -> str | None:
    status = draft.status
    if status.phase == "Paused" and status.pause_reason is not None:
        analysis = status.analysis.model_copy(update={"inconclusive": 0, "consecutive_errors": 0})
        draft.set(pause_reason=None, analysis=analysis, phase=stages.active_phase(draft),
                  step_started_at=draft.now_iso, message="analysis resumed by request")
        return None
    if status.phase not in RETRYABLE_PHASES:
        return f"retry applies after a rollback or an analysis pause, not in phase {status.phase}"
    record = draft.record
    gates_passed = record.version is not None and all(g.verdict != "Fail" for g in record.gates)
    draft.set(failure=None, canary=None, canary_weight=0)
    if gates_passed and record.version is not None and status.stable is not None:
        # The model was fine offline; only its canary failed: serve it again from the first step.
        stage = draft.stage
        draft.set(
            canary=record.version,
            step_index=0,
            canary_weight=stage.steps[0].weight,
            step_started_at=draft.now_iso,
            analysis=AnalysisRecord(version=record.version.id, started_at=draft.now_iso),
            phase="Progressing",
            message=f"retrying stage {stage.name}: canary {record.version.name}",
        )
        draft.set_record(phase="Canary", finished_at=None, message="")
        return None
    draft.put_record(StageRecord(name=record.name, attempt=record.attempt + 1))
    draft.set(phase="Pending", message=f"retrying stage {record.name}")
    return None


def _promote(draft: Draft, request: Request) -> str | None:
    status = draft.status
    if draft.status.canary is None or draft.record.phase != "Canary":
        return "no canary step to finish"
    if status.phase not in STEPPING_PHASES:
        return f"cannot finish a step in phase {status.phase}"
    streaks = status.analysis.model_copy(update={"inconclusive": 0, "consecutive_errors": 0})
    draft.set(pause_reason=None, analysis=streaks)
    stages.advance_step(draft)
    return None


def _promote_full(draft: Draft, request: Request) -> str | None:
    status = draft.status
    if status.canary is None:
        return "there is no canary to promote"
    if status.phase not in IN_FLIGHT_PHASES or status.phase == "Promoting":
        return f"cannot promote in phase {status.phase}"
    _stop_training(draft)
    draft.set(pause_reason=None)
    stages.start_promotion(draft)
    return None


_HANDLERS = {
    "abort": _abort,
    "undo": _undo,
    "retry": _retry,
    "promote_full": _promote_full,
    "promote": _promote,
}
