"""What a backtest prints: a table of every run's checks and decision, then one line that sums it up."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from modelrelease.api.status import CheckRecord, ComparisonRecord
from modelrelease.backtest.replay import Backtest, RunResult
from modelrelease.core.timestamps import format_timestamp

_VERDICT_STYLE = {"Pass": "green", "Fail": "red", "Inconclusive": "yellow", "Error": "magenta", "Skipped": "dim"}
_ACTION_STYLE = {"advance": "green", "wait": "yellow", "pause": "bold yellow", "roll back": "bold red"}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def comparison_text(found: ComparisonRecord) -> str:
    """p-value, effect and samples of one comparison, e.g. p=3e-05 (alpha 0.0061) effect -28 points, 240/240 samples."""
    samples = f"{found.canary_samples}/{found.stable_samples} samples"
    if found.p_value is None:
        return f"untested: {samples}, need {found.needed_samples}"
    effect = ""
    if found.effect is not None:
        effect = (f" effect {found.effect * 100:+.3g} points" if found.test == "proportions"
                  else f" effect {found.effect:+.1%}")
    return f"p={found.p_value:.2g} (alpha {found.alpha:.2g}){effect}, {samples}"


def value_text(record: CheckRecord) -> str:
    """A check's figures: the comparison's for a check that compares, the value (and the stable's) otherwise."""
    parts = []
    if record.comparison is None or (record.bound and not record.bound.startswith("compare ")):
        shown = _number(record.value)
        if record.stable_value is not None:
            shown += f" (stable {_number(record.stable_value)})"
        parts.append(shown)
    if record.comparison is not None:
        parts.append(comparison_text(record.comparison))
    return "\n".join(parts)


def verdict_text(record: CheckRecord) -> Text:
    text = Text(record.verdict, style=_VERDICT_STYLE.get(record.verdict, ""))
    if record.dry_run:
        text.append(" (dry run)", style="dim")
    return text


def _decision(run: RunResult) -> Text:
    text = Text(run.verdict, style=_VERDICT_STYLE.get(run.verdict, ""))
    if run.score is not None:
        text.append(f" {run.score:.0f}%")
    text.append("\n→ ")
    text.append(run.action, style=_ACTION_STYLE[run.action])
    return text


def runs_table(result: Backtest) -> Table:
    table = Table(title=_title(result), title_justify="left", show_lines=False)
    table.add_column("run", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("value or statistic", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    table.add_column("run verdict", no_wrap=True)
    for run in result.runs:
        for index, record in enumerate(run.checks):
            first = index == 0
            table.add_row(
                f"{run.run}\n{format_timestamp(run.at)}" if first else "",
                record.name,
                value_text(record),
                verdict_text(record),
                record.reason,
                _decision(run) if first else "",
                end_section=index == len(run.checks) - 1,
            )
    return table


def _title(result: Backtest) -> str:
    target = result.target
    return (f"{target.namespace}/{target.release}: canary {target.canary_version} against stable "
            f"{target.stable_version}, every {result.interval.total_seconds():g}s from "
            f"{format_timestamp(result.start)} to {format_timestamp(result.end)}")


def summary(result: Backtest) -> str:
    """One line: whether the release would have passed, and which run decided otherwise and why."""
    if result.unreachable is not None:
        return f"no verdict: Prometheus answered no query ({result.unreachable})"
    counts = {action: sum(r.action == action for r in result.runs) for action in ("advance", "wait")}
    tally = f"{len(result.runs)} runs: {counts['advance']} advance, {counts['wait']} wait"
    decided = result.decided_by
    if decided is not None:
        return f"would {decided.action} at run {decided.run} ({format_timestamp(decided.at)}): {_why(result, decided)}"
    if result.passed:
        return f"passes: {tally}"
    return f"does not pass: no run passed ({tally})"


def _why(result: Backtest, decided: RunResult) -> str:
    failure_limit, inconclusive_limit, error_limit = result.analysis_limits
    deciding = [r for r in decided.checks if not r.dry_run]
    if decided.action == "roll back":
        failed = "; ".join(f"{r.name}: {r.reason}" for r in deciding if r.verdict == "Fail")
        return f"{decided.record.failures} failed runs, more than failureLimit {failure_limit} ({failed})"
    if decided.record.inconclusive > inconclusive_limit:
        waiting = "; ".join(f"{r.name}: {r.reason}" for r in deciding if r.verdict == "Inconclusive")
        return (f"{decided.record.inconclusive} inconclusive runs in a row, more than inconclusiveLimit "
                f"{inconclusive_limit} ({waiting})")
    errors = "; ".join(f"{r.name}: {r.reason}" for r in deciding if r.verdict == "Error")
    return (f"{decided.record.consecutive_errors} runs with errors in a row, more than consecutiveErrorLimit "
            f"{error_limit} ({errors})")


def render(result: Backtest) -> RenderableType:
    return Group(runs_table(result), Text(summary(result), style=_summary_style(result)))


def _summary_style(result: Backtest) -> str:
    return "bold green" if result.passed else "bold red"


def print_backtest(result: Backtest, console: Console) -> None:
    console.print(render(result))
