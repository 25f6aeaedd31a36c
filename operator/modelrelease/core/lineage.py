"""What a trained version records about how it was made: data by content, image, every setting, resumption."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrelease.api.spec import ModelReleaseSpec, Stage
from modelrelease.api.status import Hyperparameters
from modelrelease.api.training_rules import training_setting

__all__ = ["hyperparameters", "lineage", "training_setting"]


def hyperparameters(spec: ModelReleaseSpec, stage: Stage) -> Hyperparameters:
    """The settings the stage's model was trained with, as the trainer received them."""
    training = stage.training
    assert training is not None
    return Hyperparameters(
        epochs=training.epochs,
        batch_size=training.batch_size,
        optimizer=training.optimizer.name,
        learning_rate=training.optimizer.learning_rate,
        weight_decay=training.optimizer.weight_decay,
        seed=training.seed,
        eval_fraction=training.eval_fraction,
        init_from=training.init_from,
        mixed_precision=training_setting(spec, stage, "mixed_precision"),
        workers=training_setting(spec, stage, "workers"),
    )


def lineage(spec: ModelReleaseSpec, stage: Stage, result: Mapping[str, Any],
            image_digest: str | None) -> dict[str, Any]:
    """The lineage fields of the stage's ModelVersion, from the spec and the trainer's result."""
    data_hash = result.get("dataHash")
    resumed = result.get("resumedFromEpoch")
    return {
        "data_hash": data_hash if isinstance(data_hash, str) else None,
        "image": image_digest or training_setting(spec, stage, "image"),
        "hyperparameters": hyperparameters(spec, stage),
        "resumed_from_epoch": resumed if isinstance(resumed, int) and not isinstance(resumed, bool) else None,
    }
