"""Stage progression: train, gate, canary steps, next stage, promotion, rollback."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from modelrelease.api.base import parse_duration
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import UNFINISHED_STAGE_PHASES, AnalysisRecord, ModelReleaseStatus, ModelVersion, Phase
from modelrelease.core import routing
from modelrelease.core.draft import Draft
from modelrelease.core.gates import evaluate_gates
from modelrelease.core.lineage import lineage, training_setting
from modelrelease.core.model import CreateJob, DeleteJob
from modelrelease.core.naming import job_name, uri_version_id, version_name
from modelrelease.core.timestamps import parse_timestamp as parse_time

POD_RESULT_GRACE = timedelta(seconds=30)
"""How long a finished Job's result may lag behind it; after that a missing result is a failure."""


def active_phase(draft: Draft) -> Phase:
    """The phase a running release is in, derived from its current stage record."""
    record = draft.record
    if record.phase == "Canary":
        return "Progressing"
    if record.phase == "Training":
        return "Training"
    return "Pending"


def step_ends_at(spec: ModelReleaseSpec, status: ModelReleaseStatus) -> datetime | None:
    if status.step_started_at is None:
        return None
    step = spec.stages[status.stage_index].steps[status.step_index]
    return parse_time(status.step_started_at) + parse_duration(step.duration)


def advance_stage(draft: Draft) -> None:
    record = draft.record
    if record.phase == "Pending":
        _start_stage(draft)
    elif record.phase == "Training":
        _follow_training(draft)
    elif record.phase == "Canary":
        _follow_steps(draft)


def _start_stage(draft: Draft) -> None:
    stage = draft.stage
    record = draft.record
    if stage.model_uri is not None:
        prebuilt = ModelVersion(
            id=uri_version_id(stage.model_uri),
            name=version_name(stage.name, uri_version_id(stage.model_uri)),
            path=stage.model_uri,
            stage=stage.name,
            data_source=None,
        )
        draft.set_record(started_at=draft.now_iso, version=prebuilt)
        _deploy_candidate(draft, prebuilt)
        return
    name = job_name(draft.release, stage.name, record.attempt, draft.status.run, draft.status.spec_hash or "",
                    workers=training_setting(draft.spec, stage, "workers"))
    if name not in draft.observed.jobs:
        draft.actions.append(_create_job(draft, name))
    draft.set_record(phase="Training", job_name=name, started_at=draft.now_iso)
    draft.set(phase="Training", message=f"training stage {stage.name} (job {name})")
    draft.event("TrainingStarted", f"stage {stage.name}: training job {name} created")


def _create_job(draft: Draft, name: str) -> CreateJob:
    stage = draft.stage
    output = f"{draft.spec.model.storage.mount_path.rstrip('/')}/{draft.release}/{name}"
    return CreateJob(name, stage.name, draft.record.attempt, output, _parent(draft))


def _parent(draft: Draft) -> ModelVersion | None:
    """Stage N starts from stage N-1's model, the first stage from the stable model, if any;
    none when the stage trains from scratch (initFrom: none) or uses a prebuilt model."""
    stage = draft.stage
    if stage.training is None or stage.training.init_from != "previous":
        return None
    index = draft.status.stage_index
    if index > 0:
        return draft.status.stages[index - 1].version
    return draft.status.stable


def _follow_training(draft: Draft) -> None:
    record = draft.record
    job = draft.observed.jobs.get(record.job_name or "")
    stage = draft.stage
    if job is None:
        # Created in an earlier pass but not (yet) seen: ask again; a 409 means it is there.
        assert record.job_name
        draft.actions.append(_create_job(draft, record.job_name))
        return
    if job.phase == "Active":
        return
    if job.pod_pending and job.finished_at is not None and draft.now - job.finished_at < POD_RESULT_GRACE:
        return  # the pod's termination message (the result, or why it failed) is still on its way
    if job.phase == "Failed":
        draft.set_record(phase="Failed", finished_at=draft.now_iso, message=job.reason)
        roll_back(draft, "TrainingFailed", f"stage {stage.name}: training job {job.name} failed: {job.reason}")
        return
    candidate = _version_from_result(draft, job.result, job.image_digest)
    if candidate is None:
        message = f"stage {stage.name}: job {job.name} succeeded but left no valid result"
        draft.set_record(phase="Failed", finished_at=draft.now_iso, message=message)
        roll_back(draft, "TrainingFailed", message)
        return
    stable_metrics = draft.status.stable.metrics if draft.status.stable else None
    passed, gate_results = evaluate_gates(stage.gates, candidate.metrics, stable_metrics)
    draft.set_record(version=candidate, gates=gate_results, finished_at=draft.now_iso)
    if not passed:
        failed = next(g for g in gate_results if g.verdict == "Fail")
        message = (
            f"stage {stage.name}: model {candidate.name} failed its gate {failed.metric} "
            f"{failed.bound}: value {failed.value}"
        )
        draft.set_record(phase="Failed", message=message)
        roll_back(draft, "GateFailed", message, value=failed.value, bound=f"{failed.metric} {failed.bound}")
        return
    skipped = [g for g in gate_results if g.verdict == "Skipped"]
    note = f" ({len(skipped)} change bounds skipped: no stable model yet)" if skipped else ""
    draft.event("GatesPassed", f"stage {stage.name}: model {candidate.name} passed its gates{note}")
    _deploy_candidate(draft, candidate)


def _version_from_result(draft: Draft, result: Mapping[str, Any] | None,
                         image_digest: str | None = None) -> ModelVersion | None:
    if not result or not result.get("ok") or not isinstance(result.get("version"), str):
        return None
    metrics = result.get("metrics")
    if not isinstance(metrics, dict) or not isinstance(result.get("artifactPath"), str):
        return None
    stage = draft.stage
    parent = _parent(draft)
    # A NaN or infinite metric (a diverged loss) is not reported: its gate fails as "no usable value",
    # and the status stays valid JSON (an API server refuses NaN) and equal to itself across passes.
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    return ModelVersion(
        id=result["version"],
        name=version_name(stage.name, result["version"]),
        path=result["artifactPath"],
        stage=stage.name,
        metrics=numbers,
        trained_at=result.get("trainedAt"),
        parent=parent.id if parent else None,
        data_source=result.get("dataSource"),
        job_name=draft.record.job_name,
        **lineage(draft.spec, stage, result, image_digest),
    )


def _deploy_candidate(draft: Draft, candidate: ModelVersion) -> None:
    stage = draft.stage
    if draft.status.stable is None:
        draft.release_version(candidate)
        draft.set_record(phase="Succeeded", finished_at=draft.now_iso)
        draft.event(
            "FirstRelease",
            f"stage {stage.name}: {candidate.name} is the first model and becomes stable directly "
            "(no stable to split traffic against; its steps are skipped)",
        )
        _next_stage(draft)
        return
    first = stage.steps[0]
    draft.set(
        canary=candidate,
        step_index=0,
        canary_weight=first.weight,
        step_started_at=draft.now_iso,
        analysis=AnalysisRecord(version=candidate.id, started_at=draft.now_iso),
        phase="Progressing",
        message=f"stage {stage.name}: canary {candidate.name} at weight {first.weight}",
    )
    draft.set_record(phase="Canary")
    draft.event("CanaryStarted", f"stage {stage.name}: canary {candidate.name} at weight {first.weight}")


def _follow_steps(draft: Draft) -> None:
    ends = step_ends_at(draft.spec, draft.status)
    if ends is None or draft.now < ends:
        return
    if draft.spec.analysis.checks and not _passed_within_step(draft.status):
        return
    if not routing.step_route_in_place(draft.spec, draft.status, draft.observed):
        return  # the route is set this pass, or waits for the canary's pods: the step holds until it is
    advance_step(draft)


def _passed_within_step(status: ModelReleaseStatus) -> bool:
    analysis = status.analysis
    if not analysis.last_run_passed or analysis.last_run_at is None or status.step_started_at is None:
        return False
    return parse_time(analysis.last_run_at) >= parse_time(status.step_started_at)


def advance_step(draft: Draft) -> None:
    stage = draft.stage
    index = draft.status.step_index + 1
    if index < len(stage.steps):
        weight = stage.steps[index].weight
        draft.set(step_index=index, canary_weight=weight, step_started_at=draft.now_iso, phase="Progressing",
                  message=f"stage {stage.name}: canary at weight {weight}")
        draft.event("StepAdvanced", f"stage {stage.name}: step {index + 1}/{len(stage.steps)}, weight {weight}")
        return
    if draft.status.stage_index == len(draft.spec.stages) - 1:
        start_promotion(draft)
        return
    draft.set_record(phase="Succeeded")
    _next_stage(draft)


def _next_stage(draft: Draft) -> None:
    index = draft.status.stage_index + 1
    if index >= len(draft.spec.stages):
        draft.set(phase="Released", message=f"released {draft.status.stable.name if draft.status.stable else ''}")
        draft.event("Released", f"{draft.status.stable.name if draft.status.stable else 'model'} is stable")
        return
    draft.set(stage_index=index, step_index=0, step_started_at=None)
    _start_stage(draft)


def start_promotion(draft: Draft) -> None:
    canary = draft.status.canary
    assert canary is not None
    draft.set(phase="Promoting", message=f"promoting {canary.name} to stable")
    draft.event("Promoting", f"promoting {canary.name} to stable")


def finish_promotion_when_done(draft: Draft) -> None:
    canary = draft.status.canary
    if canary is None:
        draft.set(phase="Released")
        return
    stable = draft.observed.deployments.get("stable")
    total = draft.spec.serving.replicas
    done = stable is not None and stable.version == canary.id and stable.ready >= total
    canary_seen = draft.observed.deployments.get("canary")
    if not done or (canary_seen is not None and canary_seen.replicas > 0):
        return
    if not routing.route_on_stable(draft.spec, draft.observed):
        return  # a promotion ends with every request on the stable
    released = draft.release_version(canary)
    # The current stage succeeded; later stages a promoteFull skipped keep their phase, closed now.
    for index in range(draft.status.stage_index, len(draft.status.stages)):
        record = draft.status.stages[index]
        if record.phase in UNFINISHED_STAGE_PHASES:
            phase = "Succeeded" if index == draft.status.stage_index else record.phase
            draft.set_record(index, phase=phase, finished_at=draft.now_iso)
    draft.set(canary=None, canary_weight=0, phase="Released", step_started_at=None,
              message=f"released {released.name}")
    draft.event("Released", f"{released.name} is stable on all {total} replicas")


def stop_active_job(draft: Draft) -> bool:
    """Delete the current stage's Job if it may still run (also when created but not yet seen)."""
    if not draft.status.stages:
        return False
    record = draft.record
    if record.phase != "Training" or not record.job_name:
        return False
    job = draft.observed.jobs.get(record.job_name)
    if job is not None and job.phase != "Active":
        return False
    draft.actions.append(DeleteJob(name=record.job_name))
    return True


def roll_back(draft: Draft, reason: str, message: str, **details: Any) -> None:
    """Withdraw the canary: canary to zero, stable to all replicas; the reason stays in status."""
    if stop_active_job(draft) or draft.record.phase == "Canary":
        draft.set_record(phase="Failed", finished_at=draft.now_iso, message=message)
    stage = draft.stage.name
    if reason == "AnalysisFailed" and draft.status.canary is not None:
        stage = draft.status.canary.stage  # the canary may be the previous stage's, serving on
    draft.fail(reason, message, stage=stage, **details)
    draft.set(phase="RollingBack", pause_reason=None)
    draft.event(reason, message, "Warning")
    finish_rollback_when_done(draft)


def finish_rollback_when_done(draft: Draft) -> None:
    if draft.status.stable is None:
        draft.set(phase="Failed", canary=None, canary_weight=0)
        return
    canary = draft.observed.deployments.get("canary")
    stable = draft.observed.deployments.get("stable")
    total = draft.spec.serving.replicas
    canary_gone = canary is None or canary.replicas == 0
    stable_back = stable is not None and stable.version == draft.status.stable.id and stable.ready >= total
    if draft.status.canary is not None or draft.status.canary_weight:
        draft.set(canary_weight=0)
    if canary_gone and stable_back and routing.route_on_stable(draft.spec, draft.observed):
        draft.set(phase="RolledBack", canary=None)
