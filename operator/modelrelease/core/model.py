"""What the planner sees (observations) and what it asks for (actions). Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelrelease.api.status import ModelReleaseStatus, ModelVersion
from modelrelease.core.measurement import AnalysisRun
from modelrelease.core.route_state import RouteObservation, RouteState

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class JobObservation:
    name: str
    phase: Literal["Active", "Succeeded", "Failed"]
    result: Mapping[str, Any] | None = None
    """The trainer's result JSON (termination message), parsed; None when absent or unreadable."""
    reason: str = ""
    """Why it failed, in words: exit code and message, OOMKilled, DeadlineExceeded."""
    finished_at: datetime | None = None
    """When the Job completed or failed (its condition's lastTransitionTime)."""
    pod_pending: bool = False
    """The Job finished but its pod's final state has not been seen yet: the result (or the exit code)
    is on its way through another watch."""
    image_digest: str | None = None
    """The trainer image the (chief) pod ran, name@sha256:..., when the node reported its digest."""


@dataclass(frozen=True)
class DeploymentObservation:
    track: Track
    version: str | None
    """The model version id its pod template serves."""
    replicas: int
    ready: int
    """Pods ready at the current template (0 until the Deployment controller has caught up)."""
    serving_hash: str | None = None
    """The serving settings its pod template was built from (see core.naming.serving_hash)."""


@dataclass(frozen=True)
class Observations:
    jobs: Mapping[str, JobObservation] = field(default_factory=dict)
    deployments: Mapping[str, DeploymentObservation] = field(default_factory=dict)
    service_exists: bool = False
    analysis: AnalysisRun | None = None
    """This pass's analysis run (the core's request and the readings), or None when none was due."""
    route: RouteObservation | None = None
    """The HTTPRoute, with serving.trafficRouting; None without."""
    track_services: frozenset[str] = frozenset()
    """The tracks whose own Service exists (<release>-stable, <release>-canary), with traffic routing."""
    unserved_worker_jobs: tuple[Mapping[str, Any], ...] = ()
    """Running multi-worker Jobs (as read) whose headless Service is missing. Not for the planner: the runtime
    recreates those Services after it carried out the plan."""


@dataclass(frozen=True)
class CreateJob:
    name: str
    stage: str
    attempt: int
    output_path: str
    init_from: ModelVersion | None


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class ApplyDeployment:
    track: Track
    version: ModelVersion | None
    """The version to serve; None keeps the current template (scaling only)."""
    replicas: int
    exists: bool = False
    """The Deployment was observed: patch it, without asking to create it first."""


@dataclass(frozen=True)
class EnsureService:
    """The release's Service over both tracks, or with ``track`` that track's own (traffic routing)."""

    track: Track | None = None


@dataclass(frozen=True)
class SetRoute:
    """Make the HTTPRoute do this: written before any canary pod is scaled down in the same plan."""

    state: RouteState


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = CreateJob | DeleteJob | ApplyDeployment | EnsureService | SetRoute | EmitEvent


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    status: ModelReleaseStatus
    requeue_after: float | None
    """Seconds until the planner wants to look again; None: only when something changes."""
