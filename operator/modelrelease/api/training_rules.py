"""What makes a stage's training pods unschedulable, or its workers unable to train together.

Checked when the spec is read, so a release that no node could ever run goes Invalid with the field to
fix instead of a Job whose pods stay Pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrelease.api.quantity import parse_quantity


def _extended(name: str) -> bool:
    """Names with a "/" (nvidia.com/gpu) outside Kubernetes' own are extended resources, which Kubernetes
    allocates only whole and never overcommits."""
    return "/" in name and not name.startswith(("hugepages-", "kubernetes.io/"))


def resources_problem(requests: Mapping[str, str | int], limits: Mapping[str, str | int]) -> str | None:
    """Why no node could admit a container with these resources, or None."""
    parsed: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    for part, values in (("requests", requests), ("limits", limits)):
        for name, value in values.items():
            try:
                parsed[part][name] = parse_quantity(value)
            except ValueError as exc:
                return f"{part}.{name}: {exc}"
            if parsed[part][name] < 0:
                return f"{part}.{name}: {value!r} is negative; a quantity is 0 or more"
            if _extended(name) and parsed[part][name].denominator != 1:
                return f"{part}.{name}: {value!r} is not a whole number; {name} is allocated in whole units"
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            return (f"requests.{name} ({requests[name]}) is above limits.{name} ({limits[name]}); "
                    "a pod may not ask for more than its limit")
        if _extended(name) and limit is None:
            return (f"requests.{name} needs limits.{name} too: extended resources such as GPUs are set as "
                    f"limits (e.g. limits: {{{name}: {requests[name]}}})")
        if _extended(name) and limit is not None and request != limit:
            return (f"requests.{name} ({requests[name]}) differs from limits.{name} ({limits[name]}); "
                    "extended resources cannot be overcommitted: set them equal, or only the limit")
    return None


def stage_setting(stage: Any, defaults: Any, name: str) -> Any:
    """A stage's own training setting, else the defaults' (spec.training)."""
    own = getattr(stage.training, name, None) if stage.training else None
    return own if own is not None else getattr(defaults, name)


def training_setting(spec: Any, stage: Any, name: str) -> Any:
    """A stage's own training setting, else spec.training's."""
    return stage_setting(stage, spec.training, name)


# The trainer flags the operator derives from the stage: repeated in args, argparse would take the later value
# and the version's recorded hyper-parameters would not be what trained it.
MANAGED_FLAGS = {
    "--stage": "stages[].name", "--data": "training.data", "--output": "model.storage",
    "--epochs": "training.epochs", "--batch-size": "training.batchSize", "--optimizer": "training.optimizer.name",
    "--learning-rate": "training.optimizer.learningRate", "--weight-decay": "training.optimizer.weightDecay",
    "--mixed-precision": "training.mixedPrecision", "--seed": "training.seed",
    "--eval-fraction": "training.evalFraction", "--init-from": "training.initFrom",
    "--workers": "training.workers", "--termination-log": "(the operator's own)",
}


def managed_flag_problems(spec: Any) -> list[str]:
    """args that repeat a flag the operator sets from a field, with the field to set instead."""
    places = [("training.args", spec.training.args)] + [
        (f"stages[{i}].training.args", stage.training.args) for i, stage in enumerate(spec.stages)
        if stage.training is not None]
    problems = []
    for where, args in places:
        for arg in args or []:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_FLAGS:
                problems.append(f"{where}: {flag} is set by the operator from {MANAGED_FLAGS[flag]}; set that "
                                "field instead (a repeated flag would override it, and the version would record "
                                "settings it was not trained with)")
    return problems


def worker_problems(spec: Any) -> list[str]:
    """Each multi-worker stage's settings that cannot train together, with the field to change."""
    problems = []
    for index, stage in enumerate(spec.stages):
        if stage.training is None:
            continue
        workers = training_setting(spec, stage, "workers")
        if workers > 1 and stage.training.batch_size < workers:
            problems.append(
                f"stages[{index}].training.batchSize ({stage.training.batch_size}) is below its workers "
                f"({workers}): the batch is split among the workers, each needs at least one example; raise "
                "batchSize or lower workers")
    return problems
