"""The ModelRelease status: everything the operator knows, so that a restarted operator resumes."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field

from modelrelease.api.base import WireModel

Phase = Literal[
    "Pending",
    "Training",
    "Progressing",
    "Paused",
    "Promoting",
    "Released",
    "RollingBack",
    "RolledBack",
    "Failed",
    "Invalid",
]
PHASES: tuple[Phase, ...] = get_args(Phase)

# The phase vocabulary: every group of phases the operator decides by, named once. docs/reference.md
# (Phases) lists the same groups; tests/api/test_phases.py holds the two together.
TERMINAL_PHASES: frozenset[Phase] = frozenset({"Released", "RolledBack", "Failed"})
"""Nothing is in flight; only a person moves the release on (a spec change or an action)."""
IN_FLIGHT_PHASES: frozenset[Phase] = frozenset({"Pending", "Training", "Progressing", "Paused", "Promoting"})
"""A release under way that has not begun to withdraw its canary: abort and promoteFull apply.
Paused is in flight (held, not ended); RollingBack is not (it is already on its way back)."""
MOVING_REPLICAS_PHASES: frozenset[Phase] = frozenset({"Promoting", "RollingBack"})
"""Replicas move between the tracks in batches; spec.paused waits until they are done."""
ACTIVE_PHASES: frozenset[Phase] = (IN_FLIGHT_PHASES - {"Paused"}) | {"RollingBack"}
"""The operator moves the release on by itself, without waiting for a person: the Progressing
condition is True and the release is looked at again soon."""
ANALYSING_PHASES: frozenset[Phase] = frozenset({"Training", "Progressing"})
"""A canary serving at its step weight is measured (the next stage may be training meanwhile)."""
STEPPING_PHASES: frozenset[Phase] = frozenset({"Progressing", "Paused"})
"""A canary stands at a step that actions.promote may finish."""
FAILURE_PHASES: frozenset[Phase] = frozenset({"RollingBack", "RolledBack", "Failed"})
"""Reached through a failure or an abort; Degraded when status.failure says why."""
RETRYABLE_PHASES: frozenset[Phase] = FAILURE_PHASES & TERMINAL_PHASES
"""A release that ended in a failure: actions.retry starts its current stage again."""
CANARY_WITHDRAWN_PHASES: frozenset[Phase] = TERMINAL_PHASES | {"RollingBack"}
"""No canary is wanted: whatever canary still serves hands its replicas back to the stable."""

Verdict = Literal["Pass", "Fail", "Inconclusive", "Error", "Skipped"]


class StatusModel(WireModel):
    # Status written by an older operator may carry fields this one no longer knows.
    model_config = ConfigDict(extra="ignore")


class ModelVersion(StatusModel):
    id: str
    """Content hash of the model (sha256:...) or, for a prebuilt model, of its URI."""
    name: str
    """Short display name, <stage>-<first 12 hex digits of the id>; accepted by actions.undo."""
    path: str
    """Artifact folder on the model volume."""
    stage: str
    metrics: dict[str, float] = Field(default_factory=dict)
    trained_at: str | None = None
    parent: str | None = None
    """The version this one was trained from (lineage)."""
    data_source: str | None = None
    job_name: str | None = None
    released_at: str | None = None
    restored: bool = False
    """True for a history entry made by actions.undo."""


class GateResult(StatusModel):
    metric: str
    value: float | None = None
    bound: str
    verdict: Verdict
    message: str = ""


StagePhase = Literal["Pending", "Training", "Canary", "Succeeded", "Failed"]
UNFINISHED_STAGE_PHASES: frozenset[StagePhase] = frozenset({"Pending", "Training", "Canary"})
"""A stage that has not ended; a promotion closes these."""
TRAINED_STAGE_PHASES: frozenset[StagePhase] = frozenset({"Canary", "Succeeded", "Failed"})
"""A stage whose training Job has ended (its record says how)."""


class StageRecord(StatusModel):
    name: str
    phase: StagePhase = "Pending"
    attempt: int = 1
    job_name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    version: ModelVersion | None = None
    gates: list[GateResult] = Field(default_factory=list)
    message: str = ""


class CheckRecord(StatusModel):
    name: str
    verdict: Verdict
    value: float | None = None
    stable_value: float | None = None
    bound: str = ""
    reason: str = ""


class AnalysisRecord(StatusModel):
    version: str | None = None
    """The canary version these counters belong to; a new canary starts them afresh."""
    started_at: str | None = None
    last_run_at: str | None = None
    last_run_passed: bool = False
    runs: int = 0
    successes: int = 0
    failures: int = 0
    inconclusive: int = 0
    """Consecutive inconclusive runs."""
    consecutive_errors: int = 0
    checks: list[CheckRecord] = Field(default_factory=list)


class Condition(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class HandledActions(StatusModel):
    promote: str | None = None
    promote_full: str | None = None
    abort: str | None = None
    retry: str | None = None
    undo: str | None = None


class Failure(StatusModel):
    """Why the release rolled back or failed, in numbers."""

    reason: str
    message: str
    stage: str | None = None
    check: str | None = None
    value: float | None = None
    bound: str | None = None
    at: str


class ModelReleaseStatus(StatusModel):
    phase: Phase = "Pending"
    message: str = ""
    observed_generation: int | None = None
    run: int = 0
    """Counts the starts of this release (one more per spec change); part of Job names, so a spec
    that changes back never meets the Jobs of an earlier run."""
    spec_hash: str | None = None
    """Hash of model, training and stages; a change restarts the release."""
    current_stage: str | None = None
    """Name of the stage at stageIndex (for printer columns)."""
    stage_index: int = 0
    step_index: int = 0
    step_started_at: str | None = None
    canary_weight: int = 0
    stable: ModelVersion | None = None
    canary: ModelVersion | None = None
    stages: list[StageRecord] = Field(default_factory=list)
    analysis: AnalysisRecord = AnalysisRecord()
    history: list[ModelVersion] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    handled_actions: HandledActions = HandledActions()
    failure: Failure | None = None
    pause_reason: str | None = None
    """Why the operator paused the release itself (e.g. inconclusive analysis)."""
