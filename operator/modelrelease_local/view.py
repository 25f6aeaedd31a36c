"""
A live terminal view of a release on the embedded default (rich).

It shows the stage and phase, the canary weight, the last run's score, each analysis check's value
against its bound and, for a check that compares, the p-value against the run's alpha, the effect and
the samples (dry-run checks greyed: they never decide a run), the stages with their versions and
gates, training progress read from the trainers' logs, and the traffic each track received (through an
HTTPRoute also the copies mirrored to a track, the requests a header route sent there, and the requests
the route itself failed).
:func:`render` builds one frame from plain data, so that it can be tested (and printed) without a
terminal; :class:`LiveView` refreshes it in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelrelease_local.executor import TrainingProgress
from modelrelease_local.traffic import TrafficStats

__all__ = ["LiveView", "check_label", "comparison_cells", "render", "route_failures_text", "route_text",
           "score_text"]

_VERDICT_STYLE = {"Pass": "green", "Fail": "bold red", "Inconclusive": "yellow", "Error": "magenta",
                  "Skipped": "dim"}
_PHASE_STYLE = {"Released": "bold green", "RolledBack": "bold red", "Failed": "bold red", "RollingBack": "red",
                "Paused": "yellow", "Training": "cyan", "Progressing": "blue", "Promoting": "green"}


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _float(value: Any) -> float | None:
    """The value when it is a number (JSON's true is not), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def comparison_cells(comparison: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """A check's comparison as (p-value against alpha, effect, samples); dashes for a check without one.
    The effect is relative for mann-whitney (+3.1%) and in points of the rate for proportions (-2 pts)."""
    if not comparison:
        return "-", "-", "-"
    p_value, alpha = _float(comparison.get("pValue")), _float(comparison.get("alpha"))
    if p_value is None:
        shown = "not tested" + (f" (alpha {alpha:.2g})" if alpha is not None else "")
    elif alpha is None:
        shown = f"{p_value:.2g}"
    else:
        shown = f"{p_value:.2g} {'<' if p_value < alpha else '>='} alpha {alpha:.2g}"
    effect = _float(comparison.get("effect"))
    if effect is None:
        effect_text = "-"
    elif comparison.get("test") == "proportions":
        effect_text = f"{effect * 100:+.2g} pts"
    else:
        effect_text = f"{effect:+.1%}"
    samples = f"{comparison.get('canarySamples', 0)}/{comparison.get('stableSamples', 0)}"
    needed = comparison.get("neededSamples")
    return shown, effect_text, samples + (f", need {needed}" if needed else "")


def check_label(check: Mapping[str, Any]) -> str:
    """The check's name, marked when it is a dry run (recorded, never deciding)."""
    return f"{check.get('name', '')} (dry run)" if check.get("dryRun") else str(check.get("name", ""))


def score_text(analysis: Mapping[str, Any]) -> str | None:
    """The last run's score (0 to 100), or None when it has none."""
    score = _float(analysis.get("score"))
    return f"{score:.0f}/100" if score is not None else None


def _header(release: Mapping[str, Any], elapsed: float, ready: Mapping[str, int] | None) -> RenderableType:
    status = release.get("status") or {}
    phase = status.get("phase") or "Pending"
    weight = int(status.get("canaryWeight") or 0)
    line = Text.assemble(
        ("ModelRelease ", "bold"), ((release.get("metadata") or {}).get("name", ""), "bold"), "  phase ",
        (phase, _PHASE_STYLE.get(phase, "")), f"  stage {status.get('currentStage') or '-'}",
        f"  step {int(status.get('stepIndex') or 0) + 1}", f"  {elapsed:.0f} s")
    versions = Text(f"stable {(status.get('stable') or {}).get('name') or '-'}   "
                    f"canary {(status.get('canary') or {}).get('name') or '-'}")
    bar = Table.grid(padding=(0, 1))
    servers = f"   ready servers: stable {(ready or {}).get('stable', 0)}, canary {(ready or {}).get('canary', 0)}"
    bar.add_row(Text("canary weight"), ProgressBar(total=100, completed=weight, width=40),
                Text(f"{weight}% (stable {100 - weight}%)" + (servers if ready is not None else "")))
    parts: list[RenderableType] = [line, versions, bar]
    if (route := route_text(release)) is not None:
        parts.append(Text(route, style="" if "not ready" not in route else "bold red"))
    return Group(*parts, Text(status.get("message") or "", style="dim"))


def route_text(release: Mapping[str, Any]) -> str | None:
    """Which HTTPRoute carries the weight, and why it cannot when RouteReady is False; None without routing."""
    serving = (release.get("spec") or {}).get("serving") or {}
    gateway = (serving.get("trafficRouting") or {}).get("gatewayAPI") or {}
    if not gateway.get("httpRoute"):
        return None
    text = f"traffic by HTTPRoute {gateway['httpRoute']}" + (f" rule {gateway['rule']}" if gateway.get("rule") else "")
    conditions = (release.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "RouteReady"), None)
    if ready is not None and ready.get("status") == "False":
        return f"{text}: not ready: {ready.get('message') or ready.get('reason') or ''}"
    return text


def _checks(release: Mapping[str, Any]) -> RenderableType:
    analysis = (release.get("status") or {}).get("analysis") or {}
    score = score_text(analysis)
    title = f"analysis: {analysis.get('runs', 0)} runs, {analysis.get('failures', 0)} failed"
    table = Table(title=title + (f", score {score}" if score else ""), title_justify="left", expand=True)
    checks = analysis.get("checks") or []
    compares = any(check.get("comparison") for check in checks)
    columns = ("check", "verdict", "canary", "stable", "bound") + (("p-value", "effect", "samples") if compares
                                                                   else ()) + ("reason",)
    for column in columns:
        table.add_column(column, overflow="fold")
    for check in checks:
        verdict = check.get("verdict", "")
        # A dry-run check is greyed as a whole: its verdict is shown but never counts.
        verdict_style = "dim" if check.get("dryRun") else _VERDICT_STYLE.get(verdict, "")
        figures = comparison_cells(check.get("comparison")) if compares else ()
        table.add_row(check_label(check), Text(verdict, style=verdict_style), _number(check.get("value")),
                      _number(check.get("stableValue")), check.get("bound", ""), *figures, check.get("reason", ""),
                      style="dim" if check.get("dryRun") else None)
    return table


def _stages(release: Mapping[str, Any]) -> RenderableType:
    table = Table(title="stages", title_justify="left", expand=True)
    for column in ("stage", "phase", "version", "accuracy", "gates"):
        table.add_column(column, overflow="fold")
    for record in (release.get("status") or {}).get("stages") or []:
        version = record.get("version") or {}
        gates = _gates(record.get("gates") or [])
        table.add_row(record.get("name", ""), record.get("phase", ""), version.get("name") or "-",
                      _number((version.get("metrics") or {}).get("accuracy")), gates or "-")
    return table


def _gates(gates: Sequence[Mapping[str, Any]]) -> str:
    """Passed gates counted, the others named with their bound: what needs attention stands out."""
    passed = sum(1 for g in gates if g.get("verdict") == "Pass")
    others = [f"{g.get('metric')} {g.get('bound')}: {g.get('verdict')}" for g in gates if g.get("verdict") != "Pass"]
    return "; ".join(([f"{passed} passed"] if passed else []) + others) or "-"


def _training(progress: Sequence[TrainingProgress]) -> RenderableType:
    table = Table.grid(padding=(0, 1))
    for item in progress:
        total = max(item.epochs, 1)
        table.add_row(Text(f"training {item.job}"), ProgressBar(total=total, completed=item.epoch, width=30),
                      Text(f"epoch {item.epoch}/{item.epochs or '?'}"), Text(item.last_line[-60:], style="dim"))
    return table


def _traffic(stats: TrafficStats | None) -> RenderableType:
    if stats is None:
        return Text("")
    table = Table(title="traffic", title_justify="left")
    # Columns for a route's mirrors and header routes only once there are any: a release routed by pod
    # counts keeps the plain table.
    extra = [(name, counts) for name, counts in (("by header", stats.header_routed), ("mirrored", stats.mirrored))
             if counts]
    for column in ("release/track", "requests", *(name for name, _ in extra), "errors", "feedback"):
        table.add_column(column)
    # A shadow canary (weight 0, mirrored to) answers no request but still has a row.
    for key in sorted({*stats.requests, *stats.mirrored, *stats.header_routed}):
        table.add_row("/".join(key), str(stats.requests.get(key, 0)), *(str(counts.get(key, 0)) for _, counts in extra),
                      str(stats.errors.get(key, 0)), str(stats.feedback.get(key, 0)))
    failures = route_failures_text(stats)
    return Group(table, Text(failures, style="red")) if failures else table


def route_failures_text(stats: TrafficStats) -> str | None:
    """The requests the route answered itself, per release and HTTP status; None when there were none."""
    if not stats.route_failures:
        return None
    meaning = {404: "no rule matched", 500: "no backend", 503: "no ready endpoint"}
    per_release: dict[str, list[str]] = {}
    for (release, status), count in sorted(stats.route_failures.items()):
        code = int(status) if status.isdigit() else None
        label = f"{status} {meaning[code]}" if code in meaning else status
        per_release.setdefault(release, []).append(f"{count} x {label}")
    return "route failures: " + "; ".join(f"{release}: {', '.join(parts)}" for release, parts in per_release.items())


def render(release: Mapping[str, Any] | None, *, elapsed: float = 0.0, progress: Sequence[TrainingProgress] = (),
           traffic: TrafficStats | None = None, ready: Mapping[str, int] | None = None,
           restarts: Sequence[str] = ()) -> RenderableType:
    """One frame of the view; ``ready`` counts the ready model servers per track; ``restarts`` says which
    parts of the stack had to be started again (``operator restarted 2 times (last exit: SIGKILL)``)."""
    notices = [Text(line, style="bold yellow") for line in restarts]
    if release is None:
        return Panel(Group(Text("waiting for the ModelRelease to appear..."), *notices), title="modelrelease local")
    parts: list[RenderableType] = [_header(release, elapsed, ready), *notices, _stages(release), _checks(release)]
    if progress:
        parts.append(_training(progress))
    parts.append(_traffic(traffic))
    return Panel(Group(*parts), title="modelrelease local demo")


class LiveView:
    """``with LiveView() as view: view.update(release, ...)`` refreshes the frame in place."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 2.0) -> None:
        self.console = console or Console()
        self._live = Live(render(None), console=self.console, refresh_per_second=refresh_per_second,
                          transient=False)

    def update(self, release: Mapping[str, Any] | None, **details: Any) -> None:
        self._live.update(render(release, **details))

    def __enter__(self) -> Self:
        self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._live.stop()
