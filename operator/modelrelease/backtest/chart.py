"""The backtest's chart: one panel per check over time, and the release's decisions marked.

A check with bounds plots the canary's value (and the stable's, when read) with its bounds; a ratio
bound is drawn as the stable's value times the ratio, the line the canary had to stay on the right
side of. A check that compares plots its p-value on a log scale with each run's alpha: a point below
the alpha line is a significant difference. A rollback or a pause is a vertical line on every panel.
matplotlib is imported only here and only when a chart is drawn: it is the ``backtest`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from modelrelease.api.spec import AnalysisCheck
from modelrelease.api.status import CheckRecord
from modelrelease.backtest.replay import Backtest, RunResult
from modelrelease.core.analysis import bounds_of

_VERDICT_COLOR = {"Pass": "tab:green", "Fail": "tab:red", "Inconclusive": "tab:olive", "Error": "tab:purple",
                  "Skipped": "tab:gray"}
_ACTION_COLOR = {"roll back": "tab:red", "pause": "tab:orange"}
_SMALLEST_P = 1e-12
"""p-values below this are drawn at it: a log axis cannot show 0, and nothing is learnt beyond it."""


def panels(result: Backtest) -> list[tuple[AnalysisCheck, str]]:
    """(check, "value" or "p-value") in spec order: a check with bounds and a comparison gets both."""
    found: list[tuple[AnalysisCheck, str]] = []
    for check in result.checks:
        if bounds_of(check).any:
            found.append((check, "value"))
        if check.compare is not None:
            found.append((check, "p-value"))
    return found


def _record(run: RunResult, name: str) -> CheckRecord | None:
    return next((r for r in run.checks if r.name == name), None)


def _series(result: Backtest, name: str) -> list[tuple[datetime, CheckRecord]]:
    pairs = ((run.at, _record(run, name)) for run in result.runs)
    return [(at, record) for at, record in pairs if record is not None]


def _verdict_points(ax: Any, points: Sequence[tuple[datetime, float, str]]) -> None:
    """A marker per run, coloured by the check's verdict in that run."""
    for verdict, color in _VERDICT_COLOR.items():
        chosen = [(at, y) for at, y, v in points if v == verdict]
        if chosen:
            ax.scatter([at for at, _ in chosen], [y for _, y in chosen], color=color, zorder=3, s=22, label=verdict)


def _plot_values(ax: Any, check: AnalysisCheck, series: list[tuple[datetime, CheckRecord]]) -> None:
    bounds = bounds_of(check)
    canary = [(at, r.value) for at, r in series if r.value is not None]
    stable = [(at, r.stable_value) for at, r in series if r.stable_value is not None]
    if canary:
        ax.plot([at for at, _ in canary], [v for _, v in canary], color="tab:blue", label="canary")
    if stable:
        ax.plot([at for at, _ in stable], [v for _, v in stable], color="tab:gray", linestyle="--", label="stable")
    for name, bound in (("min", bounds.min), ("max", bounds.max)):
        if bound is not None:
            ax.axhline(bound, color="tab:red", linestyle=":", label=f"{name} {bound:g}")
    for name, ratio in (("minRatio", bounds.min_ratio), ("maxRatio", bounds.max_ratio)):
        if ratio is not None and stable:
            ax.plot([at for at, _ in stable], [v * ratio for _, v in stable], color="tab:red", linestyle=":",
                    label=f"stable * {name} {ratio:g}")
    _verdict_points(ax, [(at, r.value, r.verdict) for at, r in series if r.value is not None])
    ax.set_title(f"{check.name}: {bounds.describe()}{' (dry run)' if check.dry_run else ''}", loc="left")


def _plot_p_values(ax: Any, check: AnalysisCheck, series: list[tuple[datetime, CheckRecord]]) -> None:
    compare = check.compare
    assert compare is not None
    tested = [(at, r.comparison) for at, r in series if r.comparison is not None]
    alphas = [(at, c.alpha) for at, c in tested]
    if alphas:
        ax.step([at for at, _ in alphas], [a for _, a in alphas], where="mid", color="tab:red", linestyle=":",
                label="alpha of the run")
    points = [(at, max(r.comparison.p_value, _SMALLEST_P), r.verdict) for at, r in series
              if r.comparison is not None and r.comparison.p_value is not None]
    if points:
        ax.plot([at for at, _, _ in points], [p for _, p, _ in points], color="tab:blue",
                label=f"p-value (drawn at least {_SMALLEST_P:g})")
    _verdict_points(ax, points)
    ax.set_yscale("log")
    ax.set_ylim(top=1.5)
    ax.set_title(f"{check.name}: compare {compare.test}, regression = {compare.direction}, "
                 f"confidence {compare.confidence:g}{' (dry run)' if check.dry_run else ''}", loc="left")


def _mark_actions(ax: Any, runs: Sequence[RunResult]) -> None:
    for run in runs:
        color = _ACTION_COLOR.get(run.action)
        if color is not None:
            ax.axvline(run.at, color=color, linewidth=2, alpha=0.7, label=f"{run.action} (run {run.run})")


def write_chart(result: Backtest, path: Path) -> Path:
    """Draw the backtest to a PNG at ``path``; raises ImportError without matplotlib (the backtest extra)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    shown = panels(result)
    figure = Figure(figsize=(11, 1.0 + 2.6 * max(1, len(shown))), layout="constrained")
    axes = figure.subplots(max(1, len(shown)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (check, kind) in zip(axes, shown, strict=False):
        series = _series(result, check.name)
        if kind == "value":
            _plot_values(ax, check, series)
        else:
            _plot_p_values(ax, check, series)
        _mark_actions(ax, result.runs)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    target = result.target
    figure.suptitle(f"backtest of {target.namespace}/{target.release}: canary {target.canary_version} against "
                    f"stable {target.stable_version} (UTC)")
    figure.savefig(path, dpi=100)
    return path
