"""`modelrelease backtest` against a real Prometheus serving recorded history (imported with promtool).

The history's scenarios (history_data.py) are fixed numbers: a steady canary equal to the stable, a
failing one (more errors, slower, less accurate) and a quiet one (too little traffic to judge).
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrelease.adapters.prometheus import QueryResult
from modelrelease.api import parse_spec
from modelrelease.backtest.main import UsageError, parse_time
from modelrelease.backtest.replay import Target, replay, run_times
from modelrelease.backtest.table import summary
from modelrelease.cli import main
from modelrelease.core.timestamps import parse_timestamp
from tests.prometheus import history_data
from tests.prometheus.conftest import History

START = "2024-01-01T00:01:00Z"  # history_data.T0 + 60: a full rate() range of history behind the first run
END = str(history_data.T0 + 600)  # Unix seconds: nine runs, one a minute
SELECTOR = 'model="{{ model }}",version="{{ version }}",track="{{ track }}"'
MEAN_LATENCY = (f"sum(rate(modelserver_request_duration_seconds_sum{{{SELECTOR}}}[{{{{ interval }}}}]))"
                f" / sum(rate(modelserver_request_duration_seconds_count{{{SELECTOR}}}[{{{{ interval }}}}]))")
CHECKS: list[dict[str, Any]] = [
    {"name": "error-rate", "preset": "error-rate"},
    {"name": "latency-p99", "preset": "latency-p99"},
    {"name": "accuracy-drop", "preset": "online-accuracy",
     "compare": {"test": "proportions", "direction": "decrease", "minEffect": 0.1}},
    # One series per track in this history, so a step below the interval: it overstates the evidence
    # (docs/analysis.md, step), and here only gives the replay enough samples to exercise the comparison.
    {"name": "latency-shift", "query": MEAN_LATENCY,
     "compare": {"test": "mann-whitney", "direction": "increase", "step": "15s"}},
    # Far too strict for anyone: it fails every run, and being a dry run it never decides one.
    {"name": "latency-wish", "query": MEAN_LATENCY, "max": 0.001, "dryRun": True},
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def release(model: str, url: str, *, status: bool = True, **analysis: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "modelrelease.io/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": "rel", "namespace": "default"},
        "spec": {
            "model": {"name": model, "storage": {"pvc": {"claimName": "models"}}},
            "stages": [{"name": "one", "training": {"data": "sklearn:digits"},
                        "steps": [{"weight": 10, "duration": "5m"}, {"weight": 100, "duration": "1m"}]}],
            "analysis": {"prometheus": {"url": url, "timeout": "5s"},
                         "interval": f"{history_data.INTERVAL_SECONDS}s", "checks": copy.deepcopy(CHECKS),
                         **analysis},
        },
    }
    if status:
        document["status"] = {"canary": {"id": history_data.VERSIONS["canary"]},
                              "stable": {"id": history_data.VERSIONS["stable"]}}
    return document


def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def backtest(path: Path, *extra: str) -> int:
    return main(["backtest", "-f", str(path), "--start", START, "--end", END, *extra])


def test_a_steady_canary_passes_every_run_and_the_chart_is_drawn(
        history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "steady.png"

    code = backtest(write(tmp_path, release("steady", "http://unused.invalid:9090")),
                    "--prometheus", history.prometheus.url, "--png", str(png))

    out = capsys.readouterr().out
    assert code == 0, out
    assert png.read_bytes()[:8] == PNG_MAGIC
    for check in ("error-rate", "latency-p99", "accuracy-drop", "latency-shift", "latency-wish"):
        assert check in out
    assert "Fail (dry run)" in out  # recorded and shown, never counted
    # Run 1 waits: five samples a track cannot reach its alpha, shared by the two comparisons.
    assert out.count("→ advance") == 8
    assert "passes: 9 runs: 8 advance, 1 wait" in out


def test_a_failing_canary_rolls_back_at_the_first_run(
        history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "failing.png"
    path = write(tmp_path, release("failing", history.prometheus.url, status=False))

    code = backtest(path, "--canary-version", "v2", "--stable-version", "v1", "--png", str(png))

    out = capsys.readouterr().out
    assert code == 1, out
    assert "would roll back at run 1 (2024-01-01T00:02:00Z)" in out
    assert "error-rate: 0.2 > 0.05" in out
    assert "accuracy-drop: canary lower than stable" in out
    assert "→ roll back" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_a_quiet_canary_pauses_after_too_many_inconclusive_runs(
        history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, release("quiet", history.prometheus.url, inconclusiveLimit=2))

    code = backtest(path, "--png", str(tmp_path / "quiet.png"))

    out = capsys.readouterr().out
    assert code == 1, out
    assert "would pause at run 3 (2024-01-01T00:04:00Z): 3 inconclusive runs in a row" in out
    assert "waiting for traffic: 12 samples, need 20" in out
    assert out.count("→ wait") == 2


def test_the_replay_reads_each_comparison_over_its_window_since_the_canary_started(history: History) -> None:
    spec = parse_spec(release("failing", history.prometheus.url)["spec"])
    target = Target("rel", "default", history_data.VERSIONS["canary"], history_data.VERSIONS["stable"])
    start = parse_timestamp(START)
    # A failure limit no run reaches: the replay goes on to the end instead of stopping at run 1.
    spec = spec.model_copy(update={"analysis": spec.analysis.model_copy(update={"failure_limit": 100})})

    result = replay(spec, target, history.provider, start, parse_timestamp("2024-01-01T00:04:00Z"))

    assert [r.run for r in result.runs] == [1, 2, 3]
    assert all(r.verdict == "Fail" and r.action == "wait" for r in result.runs)
    shifts = [next(c for c in r.checks if c.name == "latency-shift") for r in result.runs]
    # Steps of 15 s from the canary's start: 1, 2, then 3 minutes of them, both ends included.
    assert [s.comparison.canary_samples for s in shifts if s.comparison] == [5, 9, 13]
    # Five samples a track cannot reach run 1's alpha (shared by two comparisons); nine can.
    assert [s.verdict for s in shifts] == ["Inconclusive", "Fail", "Fail"]
    assert shifts[1].value == pytest.approx(0.09) and shifts[1].stable_value == pytest.approx(0.02)
    drops = [next(c for c in r.checks if c.name == "accuracy-drop") for r in result.runs]
    # proportions: the window's feedback counts, 60 per 15 s step, grow with the window too.
    assert [d.comparison.canary_samples for d in drops if d.comparison] == [240, 480, 720]
    assert drops[0].comparison and drops[0].comparison.effect == pytest.approx(40 / 60 - 57 / 60)
    assert not result.passed


def test_versions_named_neither_by_flags_nor_by_status_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, release("steady", "http://127.0.0.1:9", status=False))

    assert backtest(path) == 2

    err = capsys.readouterr().err
    assert "--canary-version and --stable-version" in err


def test_a_bad_spec_is_refused_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = release("steady", "http://127.0.0.1:9")
    document["spec"]["analysis"]["checks"][0]["preset"] = "no-such-preset"

    assert backtest(write(tmp_path, document)) == 2

    err = capsys.readouterr().err
    assert "the spec is invalid" in err and "spec.analysis.checks[0]: unknown preset 'no-such-preset'" in err


def test_an_unreachable_prometheus_is_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    png = tmp_path / "never.png"

    code = backtest(write(tmp_path, release("steady", f"http://127.0.0.1:{port}")), "--png", str(png))

    assert code == 2
    err = capsys.readouterr().err
    assert f"Prometheus at http://127.0.0.1:{port} answered no query" in err and "connection refused" in err
    assert not png.exists()


def test_python_dash_m_runs_the_backtest_and_draws_the_chart_in_the_current_directory(
        history: History, tmp_path: Path) -> None:
    path = write(tmp_path, release("steady", history.prometheus.url))

    done = subprocess.run(
        [sys.executable, "-m", "modelrelease", "backtest", "-f", str(path), "--start", START,
         "--end", "2024-01-01T00:03:00Z"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert "passes: 2 runs: 1 advance, 1 wait" in done.stdout
    assert (tmp_path / "backtest.png").read_bytes()[:8] == PNG_MAGIC


class _Erring:
    """A Prometheus that is there but answers every query with a server error."""

    def at(self, time: datetime) -> _Erring:
        return self

    def query(self, promql: str) -> QueryResult:
        return QueryResult.failed("server", "Prometheus answered 503")

    def query_range(self, promql: str, start: float | datetime, end: float | datetime, step: float) -> QueryResult:
        return self.query(promql)


def test_errors_on_every_run_pause_once_the_error_limit_is_passed() -> None:
    spec = parse_spec(release("steady", "http://127.0.0.1:9", consecutiveErrorLimit=1)["spec"])
    start = parse_timestamp(START)

    result = replay(spec, Target("rel", "default", "v2", "v1"), _Erring(), start, start + timedelta(minutes=5))

    assert [(r.verdict, r.action) for r in result.runs] == [("Error", "wait"), ("Error", "pause")]
    assert result.unreachable is None and not result.passed
    assert summary(result).startswith("would pause at run 2 (2024-01-01T00:03:00Z): 2 runs with errors in a row, "
                                      "more than consecutiveErrorLimit 1 (error-rate: canary query: Prometheus "
                                      "answered 503;")


def test_times_are_rfc_3339_with_a_zone_or_unix_seconds() -> None:
    assert parse_time("1704067260", "--start") == parse_timestamp(START)
    assert parse_time("2024-01-01T01:01:00+01:00", "--start") == parse_timestamp(START)
    with pytest.raises(UsageError, match="--end '2024-01-01T00:01:00' has no time zone: add one"):
        parse_time("2024-01-01T00:01:00", "--end")
    with pytest.raises(UsageError, match="--start 'yesterday' is not a time"):
        parse_time("yesterday", "--start")


def test_a_range_too_short_for_one_run_names_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, release("steady", "http://127.0.0.1:9"))

    assert main(["backtest", "-f", str(path), "--start", START, "--end", "2024-01-01T00:01:59Z"]) == 2

    assert "--end: no run fits between --start and --end" in capsys.readouterr().err


def test_runs_come_one_interval_apart_after_the_start_up_to_the_end() -> None:
    start = parse_timestamp(START)

    times = run_times(start, start + timedelta(seconds=150), timedelta(seconds=60))

    assert times == [start + timedelta(seconds=60), start + timedelta(seconds=120)]
    assert run_times(start, start + timedelta(seconds=120), timedelta(seconds=60))[-1] == start + timedelta(seconds=120)
