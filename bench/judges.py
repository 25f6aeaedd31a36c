"""Four canary judges on the same recorded traffic: how soon each rolls back a regression, how often a
healthy canary.

Histories (bench/judges_histories.py): a canary and a stable track for 30 analysis intervals of 60 s,
scraped every 15 s, with Poisson traffic, binomial errors and feedback, and per-request latencies in
the server's histogram buckets. Regressions: p99 latency x2, error rate 1% -> 3%, online accuracy
90% -> 85%, each at 10% and 50% canary weight; a drift (canary latency +3% per interval); and
histories that must not roll back: equal traffic at 10% and 50%, very low traffic (a few canary
requests per interval), and scrape gaps (10% of scrapes missing, and the canary unscraped for 3 min).
Every seed of every history is one ``model`` label in one TSDB, written as OpenMetrics, imported by
promtool and served by one real Prometheus. Each series is read once, as a range
(``PrometheusProvider.query_range``) whose steps are the moments a judge reads: the end of each
interval (the latency histogram is read as one labelled matrix per track).

Judges, each interval by interval, rolling back at its first decision to:
- threshold: the operator today: the presets error-rate (max 0.05), latency-p99 (maxRatio 1.2) and
  online-accuracy (minRatio 0.95), judged by ``core.analysis.judge`` and counted by ``tally`` with
  failureLimit 0;
- statistical: the operator's comparison (``core.comparison``), confidence 0.99, run k = interval k:
  Mann-Whitney on every request's latency from the histogram's buckets over the 10m window
  (``samples: histogram``, increase), and Fisher's exact tests on the error rate (increase) and the
  accuracy (decrease, minEffect 0.03), counted since the canary started; the three share each run's
  error budget; a Fail of any rolls back;
- flagger-like and argo-rollouts-like: bench/judges_rivals.py.
Pauses (inconclusive or erroring runs waiting for a person) are not modelled: every judge sees all 30
intervals and only rollbacks count.

Run from the repository root:  .venv/bin/python bench/judges.py [--seeds 50] [--seed 1]
(about a minute with 50 seeds on 2 cores; --seeds 10 for a quick look).
The goal printed at the end concerns the six regressions and equal traffic; the drift is shown, not judged.
Needs /usr/bin/prometheus and /usr/bin/promtool (Debian: apt-get install -y prometheus).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the histories and rivals beside this file

import judges_histories as h
import judges_rivals as rivals
from rich.console import Console
from rich.table import Table

from modelrelease.adapters.prometheus import PrometheusConnection, PrometheusProvider
from modelrelease.api.compare import CompareSpec
from modelrelease.api.spec import AnalysisSpec
from modelrelease.api.status import AnalysisRecord
from modelrelease.core.analysis import judge, tally
from modelrelease.core.comparison import ComparisonVerdict, compare_histograms, compare_proportions
from modelrelease.core.measurement import AnalysisRun, MeasurementRequest, Reading, ReleaseVariables, build_request
from modelrelease.promql.templates import render
from modelrelease_local.prometheus import PrometheusProcess, create_blocks_from_openmetrics

THRESHOLD_SPEC = AnalysisSpec.model_validate({
    "prometheus": {"url": "http://placeholder"},  # the bench reads through its own provider
    "interval": f"{h.INTERVAL}s",
    "failureLimit": 0,
    "checks": [{"name": "errors", "preset": "error-rate"}, {"name": "latency", "preset": "latency-p99"},
               {"name": "accuracy", "preset": "online-accuracy"}],
})
LATENCY_COMPARE = CompareSpec.model_validate(
    {"test": "mann-whitney", "direction": "increase", "confidence": 0.99, "samples": "histogram"})
WINDOW_INTERVALS = 10
"""The comparisons' window, the operator's default of 10m, in intervals."""

ERRORS_COMPARE = CompareSpec.model_validate({"test": "proportions", "direction": "increase", "confidence": 0.99})
ACCURACY_COMPARE = CompareSpec.model_validate(
    {"test": "proportions", "direction": "decrease", "confidence": 0.99, "minEffect": 0.03})
_SELECTOR = 'model="{{ model }}",version="{{ version }}",track="{{ track }}"'
BUCKET_TOTALS = f"sum by (le) (modelserver_request_duration_seconds_bucket{{{_SELECTOR}}})"
TOTALS = {  # counted since the canary started: every counter starts with it
    "requests": f"sum(modelserver_requests_total{{{_SELECTOR}}})",
    "errors": f'sum(modelserver_requests_total{{{_SELECTOR},code=~"5.."}})',
    "feedback": f"sum(modelserver_feedback_total{{{_SELECTOR}}})",
    "correct": f'sum(modelserver_feedback_total{{{_SELECTOR},outcome="correct"}})',
}
JUDGES = ("threshold", "statistical", "flagger-like", "argo-like")
# A range answer carries values only, not their times: these stand for "no result" and "NaN" at a step,
# so that every step yields exactly one value and the n-th value is the n-th step.
EMPTY, NOT_A_NUMBER = -1.0, -2.0
Value = float | None


class BenchError(RuntimeError):
    pass


def aligned(query: str) -> str:
    """``query`` (one series without labels) with one value at every step: itself, NOT_A_NUMBER or EMPTY."""
    return (f"({query}) > -Inf < Inf or (vector({NOT_A_NUMBER:g}) and on() (({query}) != ({query})))"
            f" or vector({EMPTY:g})")


@dataclass
class Reader:
    provider: PrometheusProvider
    queries: int = 0

    def series(self, query: str, first: int, step: int) -> list[Value]:
        """The value of ``query`` at ``first``, ``first + step``, ... up to the history's end."""
        last = h.T0 + h.STEPS * h.SCRAPE
        result = self.provider.query_range(aligned(query), first, last, step)
        self.queries += 1
        if result.error is not None:
            raise BenchError(f"{query}: {result.error}")
        expected = (last - first) // step + 1
        samples = result.samples or ()
        if len(samples) != expected:
            raise BenchError(f"{query}: {len(samples)} values for {expected} steps; the query must be one series")
        return [None if v == EMPTY else math.nan if v == NOT_A_NUMBER else v for v in samples]

    def buckets(self, query: str) -> list[list[tuple[float, float]]]:
        """A histogram's (le, count) at each interval's end. The adapter's range answer keeps no labels,
        so the bench reads this one matrix itself; a missing value carries the counter's last one."""
        first, last = h.T0 + h.INTERVAL, h.T0 + h.STEPS * h.SCRAPE
        answer = requests.get(f"{self.provider.url}/api/v1/query_range", timeout=30, params={
            "query": query, "start": first, "end": last, "step": h.INTERVAL}).json()
        self.queries += 1
        if answer.get("status") != "success":
            raise BenchError(f"{query}: {answer.get('error')}")
        steps = list(range(first, last + 1, h.INTERVAL))
        per_step: list[list[tuple[float, float]]] = [[] for _ in steps]
        for series in answer["data"]["result"]:
            le = float(series["metric"]["le"])
            values = {int(float(t)): float(v) for t, v in series["values"]}
            count = 0.0
            for index, at in enumerate(steps):
                count = values.get(at, count)
                per_step[index].append((le, count))
        return per_step


@dataclass(frozen=True)
class ModelReads:
    """Everything the judges read for one seed of one history."""

    request: MeasurementRequest
    bound: dict[str, list[Value]]
    """The threshold judge's queries at each interval's end, by PromQL."""
    totals: dict[tuple[str, str], list[Value]]
    """(total name, track) -> the count since the canary started, at each interval's end."""
    buckets: dict[str, list[list[tuple[float, float]]]]
    """track -> at each interval's end, the latency histogram's cumulative (le, count) since the canary started."""


def read_model(reader: Reader, model: str) -> ModelReads:
    variables = ReleaseVariables("bench", "default", model, h.VERSIONS["canary"], h.VERSIONS["stable"],
                                 timedelta(seconds=h.INTERVAL))
    request = build_request(THRESHOLD_SPEC.checks, variables)
    bound: dict[str, list[Value]] = {}
    for item in request.checks:
        for ask in item.queries.by_role():
            if ask.promql not in bound:
                bound[ask.promql] = reader.series(ask.promql, h.T0 + h.INTERVAL, h.INTERVAL)
    totals = {(name, track): reader.series(render(template, variables.values(track, version)),
                                           h.T0 + h.INTERVAL, h.INTERVAL)
              for name, template in TOTALS.items() for track, version in h.VERSIONS.items()}
    buckets = {track: reader.buckets(render(BUCKET_TOTALS, variables.values(track, version)))
               for track, version in h.VERSIONS.items()}
    return ModelReads(request, bound, totals, buckets)


def _reading(value: Value) -> Reading:
    if value is None:
        return Reading.no_data("empty result")
    return Reading.no_data("NaN") if math.isnan(value) else Reading.of(value)


def threshold_judge(reads: ModelReads) -> int | None:
    """The operator's judge and tally over the presets' bounds: the interval it rolls back at, or None."""
    record = AnalysisRecord()
    request = reads.request
    for run in range(1, h.INTERVALS + 1):
        readings = {item.check: {ask.role: _reading(reads.bound[ask.promql][run - 1]) for ask in item.queries.by_role()}
                    for item in request.checks}
        measured = AnalysisRun(request, readings).measurements()
        results = [judge(check, m, THRESHOLD_SPEC.min_sample_count, request.stable_serving, run=run)
                   for check, m in zip(THRESHOLD_SPEC.checks, measured, strict=True)]
        record, outcome = tally(record, results, THRESHOLD_SPEC, now=f"interval {run}")
        if outcome == "rollback":
            return run
    return None


def _count(reads: ModelReads, name: str, track: str, run: int) -> float:
    value = reads.totals[(name, track)][run - 1]
    return 0.0 if value is None or math.isnan(value) else value  # no series yet: nothing counted


def _proportions(spec: CompareSpec, reads: ModelReads, events: str, trials: str, run: int) -> ComparisonVerdict:
    rates = {}
    for track in h.VERSIONS:
        n = _count(reads, trials, track, run)
        rates[track] = (_count(reads, events, track, run) / n if n else 0.0, n)
    return compare_proportions(spec, *rates["canary"], *rates["stable"], run, COMPARISONS)


COMPARISONS = 3
"""The statistical judge's deciding comparisons, which share each run's error budget as in the operator."""


def _window(cumulative: list[list[tuple[float, float]]], run: int) -> list[tuple[float, float]]:
    """The histogram's counts over the window ending at interval ``run``, as increase() over it reads them."""
    now = cumulative[run - 1]
    if run <= WINDOW_INTERVALS:
        return now
    before = dict(cumulative[run - 1 - WINDOW_INTERVALS])
    return [(le, count - before.get(le, 0.0)) for le, count in now]


def statistical_judge(reads: ModelReads) -> int | None:
    """The operator's comparisons, confidence 0.99, run k at interval k: the interval of the first Fail."""
    for run in range(1, h.INTERVALS + 1):
        canary, stable = (_window(reads.buckets[track], run) for track in ("canary", "stable"))
        verdicts = (compare_histograms(LATENCY_COMPARE, canary, stable, run, COMPARISONS),
                    _proportions(ERRORS_COMPARE, reads, "errors", "requests", run),
                    _proportions(ACCURACY_COMPARE, reads, "correct", "feedback", run))
        if any(v.verdict == "Fail" for v in verdicts):
            return run
    return None


def _rival_metrics(reads: ModelReads) -> list[rivals.IntervalMetrics]:
    queries = {item.check: item.queries for item in reads.request.checks}

    def at(check: str, role: str, run: int) -> Value:
        promql = getattr(queries[check], role)
        return reads.bound[promql][run]

    return [rivals.IntervalMetrics(at("errors", "canary", k),
                                   rivals.ratio(at("latency", "canary", k), at("latency", "stable", k)),
                                   rivals.ratio(at("accuracy", "canary", k), at("accuracy", "stable", k)))
            for k in range(h.INTERVALS)]


DECIDERS: dict[str, Callable[[ModelReads], int | None]] = {
    "threshold": threshold_judge,
    "statistical": statistical_judge,
    "flagger-like": lambda reads: rivals.flagger_rollback(_rival_metrics(reads)),
    "argo-like": lambda reads: rivals.argo_rollback(_rival_metrics(reads)),
}


Outcomes = dict[str, dict[str, list[int | None]]]
"""history -> judge -> the rollback interval (or None) per seed."""


def run_bench(seeds: int, base_seed: int, console: Console) -> Outcomes:
    outcomes: Outcomes = {history.name: {name: [] for name in JUDGES} for history in h.HISTORIES}
    with tempfile.TemporaryDirectory(prefix="bench-judges-") as workdir:
        started = time.monotonic()
        text = h.write(Path(workdir) / "history.om", seeds, base_seed)
        data_dir = Path(workdir) / "data"
        create_blocks_from_openmetrics(text, data_dir)
        text.unlink()  # hundreds of MB; the blocks hold it now
        console.print(f"histories written and imported in {time.monotonic() - started:.1f}s")
        # The recorded block is far in the past; a long retention keeps it from being deleted.
        with PrometheusProcess(workdir, data_dir=data_dir, retention="100y") as prometheus, PrometheusProvider(
                PrometheusConnection(prometheus.url, timeout_seconds=30)) as provider:
            reader = Reader(provider)
            started = time.monotonic()
            for history in h.HISTORIES:
                for seed in range(seeds):
                    reads = read_model(reader, history.model(seed))
                    for name, decide in DECIDERS.items():
                        outcomes[history.name][name].append(decide(reads))
            console.print(f"{reader.queries} range queries read and judged in {time.monotonic() - started:.1f}s")
    return outcomes


def _detected(results: Sequence[int | None]) -> list[int]:
    return [r for r in results if r is not None]


def _cell(history: h.History, results: Sequence[int | None]) -> str:
    found = _detected(results)
    if history.regression:
        mean = f"{statistics.fmean(found):.1f}" if found else "-"
        return f"{mean} ({len(found)}/{len(results)})"
    return f"{len(found)}/{len(results)} ({len(found) / len(results):.0%})"


def print_table(outcomes: Outcomes, console: Console) -> None:
    table = Table(title=f"rollback decisions over {h.INTERVALS} intervals of {h.INTERVAL}s, scrape {h.SCRAPE}s",
                  caption="regressions: mean interval of the rollback (seeds rolled back / seeds); "
                          "others: false rollbacks / seeds")
    table.add_column("history")
    table.add_column("figure")
    for name in JUDGES:
        table.add_column(name, justify="right")
    for history in h.HISTORIES:
        figure = "detection" if history.regression else "false rollback"
        table.add_row(history.name, figure, *(_cell(history, outcomes[history.name][n]) for n in JUDGES))
    console.print(table)


def check_goal(outcomes: Outcomes, console: Console) -> bool:
    """Whether the statistical judge catches every regression, never rolls back equal traffic, and is on
    average no later than the threshold judge; each shortfall is printed with its numbers."""
    problems = []
    for history in h.HISTORIES:
        mine = outcomes[history.name]["statistical"]
        found = _detected(mine)
        if history.regression and not history.name.startswith("drift"):
            if len(found) < len(mine):
                problems.append(f"{history.name}: statistical missed {len(mine) - len(found)} of {len(mine)} seeds")
            theirs = _detected(outcomes[history.name]["threshold"])
            if found and theirs and statistics.fmean(found) > statistics.fmean(theirs):
                problems.append(f"{history.name}: statistical detects at {statistics.fmean(found):.1f} intervals "
                                f"on average, threshold at {statistics.fmean(theirs):.1f}")
        elif history.name.startswith("equal") and found:
            problems.append(f"{history.name}: statistical rolled back {len(found)} of {len(mine)} seeds "
                            f"(at intervals {sorted(found)})")
    drift = next(history.name for history in h.HISTORIES if history.name.startswith("drift"))
    means = {name: _detected(outcomes[drift][name]) for name in ("statistical", "threshold")}
    shown = {name: f"{statistics.fmean(found):.1f}" if found else "-" for name, found in means.items()}
    met = not problems
    console.print(f"goal (statistical: every regression caught, no false rollback on equal traffic at confidence "
                  f"0.99, no later than threshold): {'met' if met else 'NOT met'}")
    for problem in problems:
        console.print(f"  - {problem}")
    console.print(f"{drift} (shown, not part of the goal): statistical detects at {shown['statistical']} "
                  f"intervals on average, threshold at {shown['threshold']}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds per history (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="the base seed of the noise (default 1)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    console = Console()
    if console.width < 120:  # a pipe or a narrow terminal: keep the table's rows on one line each
        console = Console(width=120)
    outcomes = run_bench(args.seeds, args.seed, console)
    print_table(outcomes, console)
    check_goal(outcomes, console)


if __name__ == "__main__":
    main()
