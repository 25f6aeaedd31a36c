"""
What a demo leaves behind: a timeline of the ModelRelease's status, a chart of it, the final object.

:class:`ReleaseRecorder` samples the release every second (phase, stage, weight, the run's score, each
check's value, bound and comparison from ``status.analysis``). :func:`write_report` then writes a
report directory:

- ``chart.png``: the canary weight and the runs' score over time; each check's value (the
  canary/stable ratio for relative checks), bounds dashed; for a check that compares, the p-value on a
  log scale against the run's alpha and the effect against minEffect; dry-run checks greyed; stage
  boundaries marked, the failing check marked on a rollback;
- ``modelrelease.yaml``: the final ModelRelease;
- ``timeline.json``: the samples behind the chart.

:func:`summary_table` is the same story in a rich table for the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import yaml
from rich.table import Table

from modelrelease.api import InvalidSpecError, parse_spec
from modelrelease.api.compare import CompareSpec
from modelrelease.api.status import MOVING_REPLICAS_PHASES, TERMINAL_PHASES
from modelrelease.core.analysis import Bounds, bounds_of
from modelrelease_local.view import check_label, comparison_cells, score_text

__all__ = ["CheckPoint", "ComparisonPoint", "ReleaseRecorder", "Sample", "chart_png", "comparison_cells",
           "summary_table", "write_report"]

logger = logging.getLogger(__name__)
Fetch = Callable[[], Mapping[str, Any] | None]
# Phase changes the chart marks: replicas starting to move, a pause, and the end.
_MILESTONES = MOVING_REPLICAS_PHASES | TERMINAL_PHASES | {"Paused"}
_COLOURS = {"Pass": "tab:green", "Fail": "tab:red", "Inconclusive": "tab:grey", "Error": "tab:purple",
            "Skipped": "lightgrey"}


@dataclasses.dataclass(frozen=True)
class ComparisonPoint:
    """A run's statistical comparison of one check (``status.analysis.checks[].comparison``)."""

    test: str
    p_value: float | None
    alpha: float | None
    effect: float | None
    statistic: float | None
    canary_samples: int
    stable_samples: int
    needed_samples: int

    @classmethod
    def of(cls, record: Mapping[str, Any] | None) -> ComparisonPoint | None:
        if not record:
            return None
        counts = {key: int(record.get(key) or 0) for key in ("canarySamples", "stableSamples", "neededSamples")}
        return cls(str(record.get("test", "")), record.get("pValue"), record.get("alpha"), record.get("effect"),
                   record.get("statistic"), counts["canarySamples"], counts["stableSamples"], counts["neededSamples"])


@dataclasses.dataclass(frozen=True)
class CheckPoint:
    name: str
    verdict: str
    value: float | None
    stable_value: float | None
    bound: str
    reason: str
    dry_run: bool = False
    comparison: ComparisonPoint | None = None


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float  # seconds since the recording started
    phase: str
    stage: str | None
    weight: int
    stable: str | None
    canary: str | None
    last_run_at: str | None
    checks: tuple[CheckPoint, ...]
    score: float | None = None


def sample_of(release: Mapping[str, Any], at: float) -> Sample:
    status = release.get("status") or {}
    analysis = status.get("analysis") or {}
    checks = tuple(CheckPoint(c.get("name", ""), c.get("verdict", ""), c.get("value"), c.get("stableValue"),
                              c.get("bound", ""), c.get("reason", ""), bool(c.get("dryRun")),
                              ComparisonPoint.of(c.get("comparison")))
                   for c in analysis.get("checks") or [])
    return Sample(at=round(at, 3), phase=status.get("phase") or "Pending", stage=status.get("currentStage"),
                  weight=int(status.get("canaryWeight") or 0), stable=(status.get("stable") or {}).get("name"),
                  canary=(status.get("canary") or {}).get("name"), last_run_at=analysis.get("lastRunAt"),
                  checks=checks, score=analysis.get("score"))


class ReleaseRecorder:
    """A thread that samples one ModelRelease (through ``fetch``) every ``interval`` seconds."""

    def __init__(self, fetch: Fetch, interval: float = 1.0) -> None:
        self.fetch = fetch
        self.interval = interval
        self.samples: list[Sample] = []
        self.latest: Mapping[str, Any] | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ReleaseRecorder:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="release-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.sample_now()  # the final state belongs in the timeline

    def sample_now(self) -> Sample | None:
        try:
            release = self.fetch()
        except Exception:
            logger.exception("could not read the ModelRelease")
            return None
        if release is None:
            return None
        self.latest = release
        sample = sample_of(release, time.monotonic() - self.started)
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample_now()
            self._stop.wait(self.interval)


@dataclasses.dataclass(frozen=True)
class ChartRow:
    """One row of the chart: a check's value against its bounds, or its comparison's p-value."""

    check: str
    kind: Literal["value", "comparison"]
    bounds: Bounds | None = None
    compare: CompareSpec | None = None
    dry_run: bool = False


def chart_rows(release: Mapping[str, Any], samples: Sequence[Sample]) -> list[ChartRow]:
    """A value row for each check with bounds, a comparison row for each check that compares, in spec
    order; from the recorded checks when the spec cannot be read."""
    try:
        spec = parse_spec(release.get("spec"))
    except InvalidSpecError:
        seen: dict[str, CheckPoint] = {}
        for point in (c for sample in samples for c in sample.checks):
            seen[point.name] = point if point.comparison is not None else seen.get(point.name, point)
        return [ChartRow(name, "comparison" if point.comparison else "value", dry_run=point.dry_run)
                for name, point in sorted(seen.items())]
    rows = []
    for check in spec.analysis.checks:
        bounds = bounds_of(check)
        if bounds.any or check.compare is None:
            rows.append(ChartRow(check.name, "value", bounds=bounds, dry_run=check.dry_run))
        if check.compare is not None:
            rows.append(ChartRow(check.name, "comparison", compare=check.compare, dry_run=check.dry_run))
    return rows


def plotted_value(point: CheckPoint, bounds: Bounds | None) -> float | None:
    """What the chart shows: the ratio to stable for relative-only checks, else the value."""
    relative_only = bounds is not None and bounds.relative and bounds.min is None and bounds.max is None
    if relative_only:
        if point.value is None or point.stable_value in (None, 0):
            return None
        return float(point.value) / float(point.stable_value)  # type: ignore[arg-type]
    return point.value


def _runs(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per analysis run: the first one that shows it."""
    seen: set[str] = set()
    runs = []
    for sample in samples:
        if sample.last_run_at and sample.last_run_at not in seen and sample.checks:
            seen.add(sample.last_run_at)
            runs.append(sample)
    return runs


def _boundaries(samples: Sequence[Sample]) -> list[tuple[float, str]]:
    """Moments where the stage changed or the release reached a milestone phase."""
    marks = []
    previous: Sample | None = None
    for sample in samples:
        if sample.stage and (previous is None or sample.stage != previous.stage):
            marks.append((sample.at, f"stage {sample.stage}"))
        elif previous is not None and sample.phase != previous.phase and sample.phase in _MILESTONES:
            marks.append((sample.at, sample.phase))
        previous = sample
    return marks


def chart_png(release: Mapping[str, Any], samples: Sequence[Sample], path: pathlib.Path) -> pathlib.Path:
    """Draw the weight, the score and the checks over time into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib import pyplot

    rows = chart_rows(release, samples)
    failure = (release.get("status") or {}).get("failure") or {}
    figure, axes = pyplot.subplots(len(rows) + 1, 1, sharex=True, figsize=(10, 2.2 * (len(rows) + 1)),
                                   squeeze=False)
    columns = [row[0] for row in axes]
    runs = _runs(samples)
    _draw_weight(columns[0], samples, runs)
    name = (release.get("metadata") or {}).get("name", "")
    columns[0].set_title(f"ModelRelease {name}: {(release.get('status') or {}).get('phase', '')}", loc="right")
    for axis, row in zip(columns[1:], rows, strict=True):
        failing = failure.get("check") == row.check
        if row.kind == "comparison":
            _draw_comparison(axis, row, runs, failing=failing)
        else:
            _draw_check(axis, row.check, row.bounds, runs, failing=failing)
        if row.dry_run:  # recorded, never deciding: greyed so that it does not read as a gate
            axis.set_facecolor("#f0f0f0")
            axis.set_ylabel(f"{axis.get_ylabel()}\n(dry run)", fontsize="small", color="dimgrey")
    for axis in columns:
        for index, (at, label) in enumerate(_boundaries(samples)):
            axis.axvline(at, color="grey", linestyle=":", linewidth=1)
            if axis is columns[0]:  # labels staggered: milestones can be a second apart
                axis.annotate(label, (at, 100), xytext=(3, -10 - 10 * (index % 3)), textcoords="offset points",
                              fontsize="x-small", color="dimgrey")
    if len(columns) > 1:
        for verdict, colour in _COLOURS.items():
            columns[1].scatter([], [], c=colour, s=18, label=verdict)
        columns[1].legend(loc="upper left", fontsize="x-small", ncol=len(_COLOURS))
    columns[-1].set_xlabel("seconds since the release was applied")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=90)
    pyplot.close(figure)
    return path


def _draw_weight(axis: Any, samples: Sequence[Sample], runs: Sequence[Sample]) -> None:
    times = [s.at for s in samples]
    axis.step(times, [s.weight for s in samples], where="post", color="tab:blue", label="canary weight")
    axis.fill_between(times, 0, 100, where=[s.phase == "Training" for s in samples], step="post",
                      color="tab:orange", alpha=0.12, label="training")
    scored = [(run.at, run.score) for run in runs if isinstance(run.score, int | float)]
    if scored:  # the score is a percentage too, so it shares the weight's axis
        axis.plot([at for at, _ in scored], [score for _, score in scored], marker="o", markersize=3,
                  linewidth=0.8, color="tab:green", label="score")
    axis.set_ylim(-5, 105)
    axis.set_ylabel("canary weight %\nscore" if scored else "canary weight %")
    axis.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize="x-small", ncol=3)


def _draw_check(axis: Any, check: str, bounds: Bounds | None, runs: Sequence[Sample], *, failing: bool) -> None:
    points = [(run.at, point) for run in runs for point in run.checks if point.name == check]
    values = [(at, plotted_value(point, bounds), point.verdict) for at, point in points]
    drawn = [(at, v, verdict) for at, v, verdict in values if v is not None and math.isfinite(v)]
    _plot_verdicts(axis, drawn)
    relative_only = bounds is not None and bounds.min is None and bounds.max is None
    if bounds is not None:
        limits = (bounds.min_ratio, bounds.max_ratio) if relative_only else (bounds.min, bounds.max)
        for limit in filter(lambda v: v is not None, limits):
            axis.axhline(limit, color="tab:red", linestyle="--", linewidth=1)
    axis.set_ylabel(f"{check}\n(canary/stable)" if relative_only else check, fontsize="small")
    if failing:
        _mark_failing(axis, check, drawn)


_SMALLEST_P = 1e-12
"""p-values below this are drawn at it: a log axis cannot show 0, and nothing smaller changes a verdict."""


def plotted_p_value(point: CheckPoint) -> float | None:
    """The p-value as the chart shows it (floored at 1e-12), or None when the run did not test."""
    found = point.comparison
    if found is None or not isinstance(found.p_value, int | float) or not math.isfinite(found.p_value):
        return None
    return max(float(found.p_value), _SMALLEST_P)


def _draw_comparison(axis: Any, row: ChartRow, runs: Sequence[Sample], *, failing: bool) -> None:
    """The p-value of each run (log scale) against that run's alpha; the effect on the right axis."""
    points = [(run.at, point) for run in runs for point in run.checks
              if point.name == row.check and point.comparison is not None]
    drawn = [(at, p, point.verdict) for at, point in points if (p := plotted_p_value(point)) is not None]
    _plot_verdicts(axis, drawn)
    alphas = [(at, point.comparison.alpha) for at, point in points
              if point.comparison is not None and isinstance(point.comparison.alpha, int | float)]
    if alphas:  # alpha shrinks run by run (the error budget is spread over the runs): a step line
        axis.step([a[0] for a in alphas], [a[1] for a in alphas], where="post", color="tab:red", linestyle="--",
                  linewidth=1, label="alpha")
        axis.legend(loc="lower right", fontsize="x-small")
    axis.set_yscale("log")
    axis.set_ylabel(f"{row.check}\np-value", fontsize="small")
    # The effect in percent (mann-whitney: of the stable's median) or in points of the rate (proportions).
    test = row.compare.test if row.compare else next((p.comparison.test for _, p in points if p.comparison), "")
    effects = [(at, point.comparison.effect * 100) for at, point in points
               if point.comparison is not None and isinstance(point.comparison.effect, int | float)]
    twin = axis.twinx()
    twin.plot([e[0] for e in effects], [e[1] for e in effects], color="tab:blue", linewidth=0.8, marker=".", alpha=0.5)
    if row.compare is not None:  # the effect that counts as a regression, in its direction
        floor = row.compare.effect_floor * 100
        for limit in {"increase": (floor,), "decrease": (-floor,), "either": (floor, -floor)}[row.compare.direction]:
            twin.axhline(limit, color="tab:blue", linestyle=":", linewidth=1)
    twin.set_ylabel(f"effect ({'points' if test == 'proportions' else '%'})", fontsize="small", color="tab:blue")
    if failing:
        _mark_failing(axis, row.check, drawn)


def _plot_verdicts(axis: Any, drawn: Sequence[tuple[float, float, str]]) -> None:
    if drawn:
        axis.plot([d[0] for d in drawn], [d[1] for d in drawn], color="black", linewidth=0.8)
        axis.scatter([d[0] for d in drawn], [d[1] for d in drawn], c=[_COLOURS.get(d[2], "black") for d in drawn],
                     s=18, zorder=3)


def _mark_failing(axis: Any, check: str, drawn: Sequence[tuple[float, float, str]]) -> None:
    axis.set_title(f"{check}: the failing check", color="tab:red", fontsize="small", loc="left")
    failed = [(at, v) for at, v, verdict in drawn if verdict == "Fail"]
    if failed:
        axis.scatter([f[0] for f in failed], [f[1] for f in failed], marker="x", s=80, color="tab:red", zorder=4)


def write_report(directory: pathlib.Path, release: Mapping[str, Any],
                 samples: Sequence[Sample]) -> dict[str, pathlib.Path]:
    """Write chart.png, modelrelease.yaml and timeline.json; return their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    final = {k: v for k, v in release.items() if k != "metadata"}
    meta = {k: v for k, v in (release.get("metadata") or {}).items() if k != "managedFields"}
    files = {
        "chart": chart_png(release, samples, directory / "chart.png"),
        "release": directory / "modelrelease.yaml",
        "timeline": directory / "timeline.json",
    }
    files["release"].write_text(yaml.safe_dump({"apiVersion": final.get("apiVersion"), "kind": final.get("kind"),
                                                "metadata": meta, **final}, sort_keys=False))
    files["timeline"].write_text(json.dumps([dataclasses.asdict(s) for s in samples], indent=1))
    return files


def summary_table(release: Mapping[str, Any], elapsed: float | None = None) -> Table:
    """The outcome in one table: phase, versions, stages, the failure and the last analysis."""
    status = release.get("status") or {}
    name = (release.get("metadata") or {}).get("name", "")
    table = Table(title=f"ModelRelease {name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("phase", status.get("phase", ""))
    table.add_row("message", status.get("message", ""))
    if elapsed is not None:
        table.add_row("took", f"{elapsed:.0f} s")
    table.add_row("stable", (status.get("stable") or {}).get("name") or "-")
    table.add_row("history", ", ".join(v.get("name", "") for v in status.get("history") or []) or "-")
    for record in status.get("stages") or []:
        metrics = (record.get("version") or {}).get("metrics") or {}
        accuracy = f" accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
        version = (record.get("version") or {}).get("name") or ""
        table.add_row(f"stage {record.get('name')}", f"{record.get('phase')} {version}{accuracy}".strip())
    failure = status.get("failure")
    if failure:
        table.add_row("failure", f"{failure.get('reason')}: {failure.get('message')}", style="red")
    analysis = status.get("analysis") or {}
    if score_text(analysis):
        table.add_row("score", score_text(analysis))
    for check in analysis.get("checks") or []:
        value = check.get("value")
        shown = f"{check.get('verdict')} {value:.4g}" if isinstance(value, int | float) else f"{check.get('verdict')}"
        if check.get("comparison"):
            p_value, effect, samples = comparison_cells(check["comparison"])
            shown += f" p {p_value}, effect {effect}, samples {samples}"
        table.add_row(f"check {check_label(check)}", f"{shown} ({check.get('bound')})",
                      style="dim" if check.get("dryRun") else None)
    return table
