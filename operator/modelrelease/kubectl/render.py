"""What the plugin prints: trees and tables a person reads at a glance (pure: objects in, rich out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from modelrelease.api.status import (
    FAILURE_PHASES,
    TERMINAL_PHASES,
    CheckRecord,
    ModelReleaseStatus,
    ModelVersion,
    StageRecord,
)
from modelrelease.core.timestamps import parse_timestamp

Object = Mapping[str, Any]
_PHASE_STYLE = {"Released": "bold green", "RolledBack": "bold red", "Failed": "bold red", "Invalid": "bold red",
                "RollingBack": "red", "Paused": "yellow", "Promoting": "cyan", "Progressing": "cyan",
                "Training": "blue", "Pending": "dim"}
_VERDICT_STYLE = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow", "Error": "magenta", "Skipped": "dim"}
_STAGE_MARK = {"Succeeded": "✔", "Failed": "✖", "Canary": "▶", "Training": "⟳", "Pending": "·"}


def status_of(obj: Object) -> ModelReleaseStatus:
    return ModelReleaseStatus.model_validate(obj.get("status") or {})


def phase_text(phase: str) -> Text:
    return Text(phase, style=_PHASE_STYLE.get(phase, ""))


def verdict_text(verdict: str) -> Text:
    return Text(verdict, style=_VERDICT_STYLE.get(verdict, ""))


def age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return "-"
    seconds = int((now - parse_timestamp(timestamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _metrics(metrics: Mapping[str, float], names: Sequence[str] = ("accuracy", "f1", "loss")) -> str:
    shown = [f"{name} {metrics[name]:.4g}" for name in names if name in metrics]
    return ", ".join(shown)


def _version(version: ModelVersion | None) -> str:
    return version.name if version else "-"


def release_table(objects: Sequence[Object], all_namespaces: bool, now: datetime) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "STAGE", "WEIGHT", "STABLE",
                                                           "CANARY", "AGE"]
    for column in columns:
        table.add_column(column)
    for obj in objects:
        status, meta = status_of(obj), obj["metadata"]
        row: list[RenderableType] = [meta["namespace"]] if all_namespaces else []
        row += [meta["name"], phase_text(status.phase), status.current_stage or "-", f"{status.canary_weight}%",
                _version(status.stable), _version(status.canary), age(meta.get("creationTimestamp"), now)]
        table.add_row(*row)
    return table


def _track(label: str, version: ModelVersion | None, replicas: Mapping[str, tuple[int, int]], extra: str) -> Text:
    ready, wanted = replicas.get(label, (0, 0))
    text = Text(f"{label:<7}", style="bold")
    text.append(f"{_version(version)}  ")
    text.append(f"{wanted} replicas, {ready} ready")
    if extra:
        text.append(f"  {extra}")
    return text


def _stage_branch(tree: Tree, record: StageRecord, index: int, status: ModelReleaseStatus,
                  steps: Sequence[Mapping[str, Any]]) -> None:
    label = Text(f"{_STAGE_MARK.get(record.phase, '·')} {record.name}  ", style="bold" if index ==
                 status.stage_index else "")
    label.append_text(Text(record.phase, style=_PHASE_STYLE.get(record.phase, "")))
    if record.attempt > 1:
        label.append(f"  attempt {record.attempt}")
    if record.job_name:
        label.append(f"  job {record.job_name}")
    if index == status.stage_index and record.phase == "Canary" and steps:
        label.append(f"  step {status.step_index + 1}/{len(steps)} at weight {status.canary_weight}%")
    branch = tree.add(label)
    if record.version is not None:
        branch.add(f"model {record.version.name}  {_metrics(record.version.metrics)}")
    for gate in record.gates:
        line = Text(f"gate {gate.metric} {gate.bound}: ")
        line.append("-" if gate.value is None else f"{gate.value:.4g}")
        line.append("  ")
        line.append_text(verdict_text(gate.verdict))
        branch.add(line)
    if record.message:
        branch.add(Text(record.message, style="red" if record.phase == "Failed" else ""))


def check_line(check: CheckRecord) -> Text:
    line = Text(f"{check.name:<18}")
    value = "-" if check.value is None else f"{check.value:.4g}"
    if check.stable_value is not None:
        value += f" (stable {check.stable_value:.4g})"
    line.append(f"{value}  bound {check.bound or '-'}  ")
    line.append_text(verdict_text(check.verdict))
    if check.verdict != "Pass" and check.reason:
        line.append(f"  {check.reason}")
    return line


def release_tree(obj: Object, replicas: Mapping[str, tuple[int, int]], events: Sequence[Object],
                 now: datetime) -> Tree:
    """The whole release: tracks, stages with Jobs and gates, the analysis, why it stopped, Events."""
    status, meta = status_of(obj), obj["metadata"]
    head = Text(f"{meta['namespace']}/{meta['name']}  ", style="bold")
    head.append_text(phase_text(status.phase))
    generation, observed = meta.get("generation"), status.observed_generation
    head.append(f"  generation {generation}" + ("" if observed == generation else f" (observed {observed})"))
    if status.message:
        head.append(f"  {status.message}", style="italic")
    tree = Tree(head)
    serving = tree.add(Text("Serving", style="bold"))
    serving.add(_track("stable", status.stable, replicas, _metrics(status.stable.metrics) if status.stable else ""))
    if status.canary is not None or replicas.get("canary", (0, 0))[1]:
        serving.add(_track("canary", status.canary, replicas, f"weight {status.canary_weight}%"))
    stages = tree.add(Text("Stages", style="bold"))
    spec_stages = (obj.get("spec") or {}).get("stages") or []
    for index, record in enumerate(status.stages):
        steps = spec_stages[index].get("steps", []) if index < len(spec_stages) else []
        _stage_branch(stages, record, index, status, steps)
    run = status.analysis
    if run.runs or run.checks:
        analysis = tree.add(Text(
            f"Analysis  runs {run.runs} · passed {run.successes} · failed {run.failures} · "
            f"inconclusive streak {run.inconclusive} · error streak {run.consecutive_errors}", style="bold"))
        for check in run.checks:
            analysis.add(check_line(check))
    if status.failure is not None and status.phase in FAILURE_PHASES:
        tree.add(Text(f"Failure  {status.failure.reason}: {status.failure.message}", style="red"))
    elif status.phase == "Paused":
        tree.add(Text(f"Paused  {status.pause_reason or 'by request'}: {status.message}", style="yellow"))
    if events:
        latest = tree.add(Text("Events", style="bold"))
        for event in events:
            when = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp")
            style = "red" if event.get("type") == "Warning" else ""
            latest.add(Text(f"{age(when, now):>4}  {event.get('reason')}: {event.get('message')}", style=style))
    return tree


def _short_time(timestamp: str | None) -> str:
    return timestamp.replace("T", " ").removesuffix("Z")[:16] if timestamp else "-"


def history_table(obj: Object) -> Table:
    """Kept versions, oldest first, with their lineage; parents are named wherever status knows them."""
    status = status_of(obj)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("", "VERSION", "STAGE", "PARENT", "DATA", "WORKERS", "METRICS", "TRAINED", "RELEASED"):
        table.add_column(column, no_wrap=column not in ("DATA", "METRICS"))
    known = [*status.history, *(r.version for r in status.stages if r.version), status.stable, status.canary]
    names = {v.id: v.name for v in known if v is not None}
    for version in status.history:
        current = status.stable is not None and (version.id, version.released_at) == (
            status.stable.id, status.stable.released_at)
        mark = "stable" if current else ("restored" if version.restored else "")
        parent = names.get(version.parent, version.parent[:19]) if version.parent else "-"
        data = version.data_source or "-"
        if version.data_hash:  # the content, short: enough to tell two data sets apart at a glance
            data += f" {version.data_hash[:15]}"
        workers = str(version.hyperparameters.workers) if version.hyperparameters else "-"
        table.add_row(mark, version.name, version.stage, parent, data, workers,
                      _metrics(version.metrics, ("accuracy", "f1")), _short_time(version.trained_at),
                      _short_time(version.released_at))
    return table


def explanation(obj: Object) -> RenderableType:
    """Why the release stopped where it is, in words: the check or gate, its value, bound and counts."""
    status, name = status_of(obj), obj["metadata"]["name"]
    lines: list[RenderableType] = []
    if status.phase == "Invalid":
        invalid = next((c for c in status.conditions if c.type == "InvalidSpec" and c.status == "True"), None)
        problems = (invalid.message if invalid else status.message).split("; ")
        lines.append(Text(f"{name} is Invalid: the operator changes nothing until the spec is fixed.", style="red"))
        lines += [Text(f"  - {problem}") for problem in problems]
    elif status.failure is not None and status.phase in FAILURE_PHASES:
        failure = status.failure
        lines.append(Text(f"{name} is {status.phase} because of {failure.reason} at {failure.at}"
                          + (f" in stage {failure.stage}" if failure.stage else "") + ".", style="red"))
        lines.append(Text(f"  {failure.message}"))
        if failure.check:
            value = "no value" if failure.value is None else f"{failure.value:.4g}"
            lines.append(Text(f"  check {failure.check}: {value}, bound {failure.bound}"))
            run = status.analysis
            lines.append(Text(f"  analysis runs {run.runs}: {run.successes} passed, {run.failures} failed"))
        elif failure.bound:
            value = "no value" if failure.value is None else f"{failure.value:.4g}"
            lines.append(Text(f"  gate {failure.bound}: {value}"))
        lines.append(Text("  next: retry, undo --to VERSION, or change the spec", style="dim"))
    elif status.phase == "Paused":
        lines.append(Text(f"{name} is Paused: {status.message}", style="yellow"))
        for check in status.analysis.checks:
            if check.verdict != "Pass":
                lines.append(Text("  ").append_text(check_line(check)))
    elif status.phase in TERMINAL_PHASES:
        lines.append(Text(f"{name} is {status.phase}: {status.message}", style="green"))
    else:
        lines.append(Text(f"{name} is {status.phase}: {status.message} (nothing has gone wrong)"))
    return Group(*lines)


def now_utc() -> datetime:
    return datetime.now(UTC)
