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

# Why the operator paused a release itself (status.pauseReason); docs/reference.md lists the same.
PauseReason = Literal["InconclusiveAnalysis", "AnalysisErrors"]
Verdict = Literal["Pass", "Fail", "Inconclusive", "Error", "Skipped"]


class StatusModel(WireModel):
    # Status written by an older operator may carry fields this one no longer knows.
    model_config = ConfigDict(extra="ignore")


class Hyperparameters(StatusModel):
    """The settings a version was trained with, as the trainer received them."""

    epochs: int
    """Training epochs."""
    batch_size: int
    """Examples per global batch (all workers together)."""
    optimizer: str
    """adam, adamw or sgd."""
    learning_rate: float
    """The optimizer's learning rate."""
    weight_decay: float
    """The optimizer's weight decay."""
    seed: int
    """Random seed of the split, the initial weights and the shuffling."""
    eval_fraction: float
    """Share of the data held out for the offline metrics."""
    init_from: str
    """previous (continued from its parent) or none (from scratch)."""
    mixed_precision: str
    """auto, on or off, as asked."""
    workers: int
    """Training pods that trained it together."""


class ModelVersion(StatusModel):
    id: str
    """Version id: the model's content hash, sha256:<64 hex digits>, or for a prebuilt model uri:<sha256 of its
    modelUri>. Passed to the server as MODEL_VERSION and filled into queries as {{ version }}."""
    name: str
    """Short display name, <stage>-<first 12 hex digits of the id>, e.g. grow-3f2a9c1b7d4e; shown by kubectl get and
    accepted by actions.undo."""
    path: str
    """Artifact folder on the model volume, passed to the server as MODEL_PATH; for a prebuilt model, its modelUri."""
    stage: str
    """Name of the stage that produced it."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Offline metrics the trainer reported (accuracy, precision, recall, f1, loss, ...), by name; empty for a
    prebuilt model."""
    trained_at: str | None = None
    """RFC 3339 time the trainer finished; unset for a prebuilt model."""
    parent: str | None = None
    """Id of the version this one was trained from (lineage); unset when trained from scratch or prebuilt."""
    data_source: str | None = None
    """The data source the trainer read (the stage's training.data); unset for a prebuilt model."""
    data_hash: str | None = None
    """Content hash of the training data as the trainer read it: md5:<hex> for a file and md5:<hex>.dir for a
    folder (as DVC computes them), sha256:<hex> of the arrays of a built-in source; unset for a prebuilt model."""
    image: str | None = None
    """Trainer image that trained it: by digest (name@sha256:...) when the node reported one, else as given."""
    hyperparameters: Hyperparameters | None = None
    """Every setting the model was trained with; unset for a prebuilt model."""
    resumed_from_epoch: int | None = None
    """Epochs already done when the final training pod started (it resumed from its checkpoint); 0 for an
    uninterrupted run, unset for a prebuilt model."""
    job_name: str | None = None
    """Name of the Job that trained it; unset for a prebuilt model."""
    released_at: str | None = None
    """RFC 3339 time it became stable; set on status.stable and status.history entries."""
    restored: bool = False
    """True for a history entry made by actions.undo. Default false."""


class GateResult(StatusModel):
    metric: str
    """The gate's metric: accuracy, precision, recall, f1 or loss."""
    value: float | None = None
    """The candidate model's value of the metric; unset when the trainer reported none."""
    bound: str
    """The bound checked, e.g. >= 0.85 or >= stable.f1 - 0.02 (stable 0.91); `reported` when the metric is missing or
    not a number."""
    verdict: Verdict
    """Pass, Fail or Skipped (a bound relative to the stable model when there is no stable value)."""
    message: str = ""
    """Why the bound was skipped or the metric unusable; empty otherwise."""


StagePhase = Literal["Pending", "Training", "Canary", "Succeeded", "Failed"]
UNFINISHED_STAGE_PHASES: frozenset[StagePhase] = frozenset({"Pending", "Training", "Canary"})
"""A stage that has not ended; a promotion closes these."""
TRAINED_STAGE_PHASES: frozenset[StagePhase] = frozenset({"Canary", "Succeeded", "Failed"})
"""A stage whose training Job has ended (its record says how)."""


class StageRecord(StatusModel):
    name: str
    """Stage name, as in spec.stages[]."""
    phase: StagePhase = "Pending"
    """Where this stage is: Pending, Training, Canary, Succeeded or Failed. Default Pending."""
    attempt: int = 1
    """Attempt number: 1, plus one for each actions.retry that trains the stage again; part of the Job name. Default
    1."""
    job_name: str | None = None
    """Name of the training Job of the current attempt; unset for a prebuilt model."""
    started_at: str | None = None
    """RFC 3339 time the current attempt of the stage started."""
    finished_at: str | None = None
    """RFC 3339 time its training ended, or the stage failed or was closed by a promotion."""
    version: ModelVersion | None = None
    """The model this stage produced, also when it then failed a gate."""
    gates: list[GateResult] = Field(default_factory=list)
    """One result per gate bound, in the order of the stage's gates."""
    message: str = ""
    """Why the stage failed (the Job's failure reason, the failed gate, ...); empty otherwise."""


class ComparisonRecord(StatusModel):
    """What a check's statistical comparison of the canary with the stable found in one run."""

    test: str
    """mann-whitney or proportions."""
    statistic: float | None = None
    """The test statistic: U of the canary's samples (mann-whitney) or z (proportions); unset when the
    samples were too few to test."""
    p_value: float | None = None
    """The p-value of a regression in the check's direction; unset when not tested."""
    alpha: float
    """The p-value below which this run counts a regression: this run's share of 1 - confidence."""
    effect: float | None = None
    """(canary - stable) / stable of the medians (mann-whitney), or canary - stable of the rates in points
    (proportions)."""
    canary_samples: int = 0
    """Samples of the canary: values read (mann-whitney) or trials counted (proportions)."""
    stable_samples: int = 0
    """Samples of the stable, counted the same way."""
    needed_samples: int = 0
    """Samples each track needs before a pass can be trusted, for the check's confidence and minEffect."""


class CheckRecord(StatusModel):
    name: str
    """The check's name in spec.analysis.checks."""
    verdict: Verdict
    """Pass, Fail, Inconclusive or Error."""
    value: float | None = None
    """The canary's value; unset without data."""
    stable_value: float | None = None
    """The stable model's value; unset when it was not queried (no ratio bound, or weight 100) or had no data."""
    bound: str = ""
    """The bounds applied, e.g. <= 0.02 or canary/stable <= 1.2."""
    reason: str = ""
    """Why this verdict, e.g. within bounds, waiting for traffic: 3 samples, need 20, 0.08 > 0.02, or the query
    error."""
    dry_run: bool = False
    """A dry-run check: recorded and charted, never counted in the run's verdict."""
    comparison: ComparisonRecord | None = None
    """The statistical comparison's figures, for a check with compare."""


class AnalysisRecord(StatusModel):
    version: str | None = None
    """Id of the canary version these counters belong to; a new canary starts them afresh."""
    started_at: str | None = None
    """RFC 3339 time this canary started serving; the first run is one interval later."""
    last_run_at: str | None = None
    """RFC 3339 time of the last counted run."""
    last_run_passed: bool = False
    """Whether the last run's verdict was Pass; a step ends only after a passing run within it."""
    runs: int = 0
    """Runs counted for this canary."""
    successes: int = 0
    """Runs that passed."""
    failures: int = 0
    """Runs that failed, over all steps; more than spec.analysis.failureLimit rolls back."""
    inconclusive: int = 0
    """Inconclusive runs since the last decisive (passing or failing) run; more than spec.analysis.inconclusiveLimit
    pauses the release."""
    consecutive_errors: int = 0
    """Runs with query errors since the last decisive (passing or failing) run; more than
    spec.analysis.consecutiveErrorLimit pauses the release."""
    checks: list[CheckRecord] = Field(default_factory=list)
    """The last run's results, one per check."""
    score: float | None = None
    """The last run's score, 0 to 100: the share of its deciding checks that passed, of those with a
    verdict (Inconclusive and Error checks are left out); unset when none had one."""


class Condition(StatusModel):
    type: str
    """Condition type: Ready, Progressing, Degraded, Paused, TrainingSucceeded or InvalidSpec."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str
    """CamelCase reason for the status, e.g. StableServing, GateFailed, InconclusiveAnalysis."""
    message: str = ""
    """Human-readable details; may be empty."""
    last_transition_time: str
    """RFC 3339 time the status last flipped."""
    observed_generation: int | None = None
    """metadata.generation of the spec the condition was set from."""


ActionKind = Literal["promote", "promote_full", "abort", "retry", "undo"]


class HandledActions(StatusModel):
    promote: str | None = None
    """The last promote request id handled (from spec.actions or an annotation)."""
    promote_full: str | None = None
    """The last promoteFull request id handled (from spec.actions or an annotation)."""
    abort: str | None = None
    """The last abort request id handled (from spec.actions or an annotation)."""
    retry: str | None = None
    """The last retry request id handled (from spec.actions or an annotation)."""
    undo: str | None = None
    """The last undo request id handled (from spec.actions or an annotation)."""


class HandledRequest(StatusModel):
    """One request id the operator has handled: it never fires again in this release's life."""

    id: str
    """The request id, as the request carried it."""
    action: ActionKind
    """Which action: promote, promote_full, abort, retry or undo."""
    source: Literal["spec", "annotation"]
    """Where it came from: spec.actions, or a request.modelrelease.io/ annotation (kubectl plugin, Argo CD)."""
    outcome: Literal["Handled", "Ignored"]
    """Handled: the action was carried out. Ignored: it did not apply then (message says why); it is
    still used up."""
    message: str = ""
    """Why an ignored request did not apply."""
    at: str
    """When it was handled (RFC 3339, UTC)."""


class Failure(StatusModel):
    """Why the release rolled back or failed, in numbers."""

    reason: str
    """TrainingFailed, GateFailed, AnalysisFailed or Aborted."""
    message: str
    """What happened, the same message as the Warning event."""
    stage: str | None = None
    """The stage it happened in: the current stage, or for AnalysisFailed the stage whose canary failed."""
    check: str | None = None
    """For AnalysisFailed: the first failing check."""
    value: float | None = None
    """The failing value: the gate's metric value or the check's canary value."""
    bound: str | None = None
    """The bound it broke, e.g. accuracy >= 0.92 or <= 0.02."""
    at: str
    """RFC 3339 time it happened."""


class ModelReleaseStatus(StatusModel):
    phase: Phase = "Pending"
    """Pending, Training, Progressing, Paused, Promoting, Released, RollingBack, RolledBack, Failed or Invalid (the
    Phase printer column). Default Pending."""
    message: str = ""
    """What is happening now, or what went wrong, in one line."""
    observed_generation: int | None = None
    """metadata.generation of the spec last acted on (planned, or rejected as Invalid)."""
    run: int = 0
    """Counts the starts of this release: 1 at creation, one more per spec change. Part of Job names, so a spec that
    changes back never meets the Jobs of an earlier run."""
    spec_hash: str | None = None
    """16 hex digits: hash of spec.model, spec.training and spec.stages; a change restarts the release."""
    current_stage: str | None = None
    """Name of the stage at stageIndex (the Stage printer column)."""
    stage_index: int = 0
    """Index of the current stage in spec.stages, from 0."""
    step_index: int = 0
    """Index of the current step in that stage's steps, from 0."""
    step_started_at: str | None = None
    """RFC 3339 time the current step began, or its wait restarted after a pause; the step may end at this time plus
    its duration."""
    route_released_at: str | None = None
    """With traffic routing: RFC 3339 time the route last took all traffic off the canary; the canary's pods
    go serving.trafficRouting.scaleDownDelay later. Unset while the route sends the canary anything."""
    canary_weight: int = 0
    """Percent of serving replicas given to the canary, 0 to 100: the current step's weight (the Weight printer
    column). It stays at the last step's weight while the next stage trains and while Promoting, and is 0 without
    a canary and after a rollback."""
    stable: ModelVersion | None = None
    """The version the stable Deployment serves; unset until the first release."""
    canary: ModelVersion | None = None
    """The version the canary Deployment serves; unset when there is no canary."""
    stages: list[StageRecord] = Field(default_factory=list)
    """One record per entry of spec.stages, in order."""
    analysis: AnalysisRecord = AnalysisRecord()
    """Counters and last results of the current canary's analysis."""
    history: list[ModelVersion] = Field(default_factory=list)
    """Released versions, oldest first, at most spec.revisionHistoryLimit; the last entry is the current stable
    model."""
    conditions: list[Condition] = Field(default_factory=list)
    """Kubernetes conditions: Ready, Progressing, Degraded, Paused, TrainingSucceeded and InvalidSpec."""
    handled_actions: HandledActions = HandledActions()
    """The last request id handled for each action."""
    handled_requests: list[HandledRequest] = Field(default_factory=list)
    """Every request id handled, newest last (the most recent 100): an id in here never fires again,
    whatever order ids arrive in (Git restoring an older id is a no-op)."""
    failure: Failure | None = None
    """Why the release rolled back or failed; cleared by a spec change, actions.retry and actions.undo."""
    pause_reason: PauseReason | None = None
    """Why the operator paused the release itself: InconclusiveAnalysis or AnalysisErrors; unset for a pause by
    spec.paused."""
