"""A plan under construction: the next status and the actions that lead to it.

Local, mutable scaffolding inside one call of ``plan``; nothing here outlives the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelrelease.api.spec import ModelReleaseSpec, Stage
from modelrelease.api.status import Failure, ModelReleaseStatus, ModelVersion, StageRecord
from modelrelease.core.model import Action, EmitEvent, Observations
from modelrelease.core.timestamps import format_timestamp


@dataclass
class Draft:
    spec: ModelReleaseSpec
    status: ModelReleaseStatus
    observed: Observations
    now: datetime
    release: str
    generation: int | None
    actions: list[Action] = field(default_factory=list)

    @property
    def now_iso(self) -> str:
        return format_timestamp(self.now)

    def set(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def event(self, reason: str, message: str, type_: Literal["Normal", "Warning"] = "Normal") -> None:
        self.actions.append(EmitEvent(type=type_, reason=reason, message=message))

    @property
    def stage(self) -> Stage:
        """The spec of the current stage (at status.stageIndex)."""
        return self.spec.stages[self.status.stage_index]

    @property
    def record(self) -> StageRecord:
        """The status record of the current stage."""
        return self.status.stages[self.status.stage_index]

    def set_record(self, index: int | None = None, **changes: Any) -> None:
        """Change a stage record (the current one unless ``index`` names another)."""
        at = self.status.stage_index if index is None else index
        self.put_record(self.status.stages[at].model_copy(update=changes), at)

    def put_record(self, record: StageRecord, index: int | None = None) -> None:
        """Replace a stage record whole (the current one unless ``index`` names another)."""
        at = self.status.stage_index if index is None else index
        stages = list(self.status.stages)
        stages[at] = record
        self.set(stages=stages)

    def release_version(self, version: ModelVersion, restored: bool = False) -> ModelVersion:
        """Make a version stable and log it in the bounded history."""
        released = version.model_copy(update={"released_at": self.now_iso, "restored": restored})
        history = [*self.status.history, released][-self.spec.revision_history_limit :]
        self.set(stable=released, history=history)
        return released

    def fail(self, reason: str, message: str, **details: Any) -> Failure:
        failure = Failure(reason=reason, message=message, at=self.now_iso, **details)
        self.set(failure=failure, message=message)
        return failure
