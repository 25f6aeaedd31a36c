"""`modelrelease backtest -f release.yaml --start T --end T`: how a spec's analysis would have judged history.

Exit codes: 0 the release would have passed (no rollback, no pause, at least one passing run); 1 it
would not have; 2 the input was wrong or Prometheus answered no query at all.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from modelrelease.adapters.prometheus import PrometheusConnection, PrometheusProvider
from modelrelease.api import parse_spec
from modelrelease.api.base import parse_duration
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.validation import InvalidSpecError
from modelrelease.backtest import replay, table

_UNIX_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_DEFAULT_TIMEOUT = 10.0


class UsageError(Exception):
    """Input the backtest cannot run with; the message names the flag or field and the fix."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelrelease backtest",
        description="Replay a ModelRelease's analysis against Prometheus history: every analysis interval "
                    "from --start to --end, as if the canary had started serving at --start.",
        epilog="Exit 0: the release would have passed; 1: it would have rolled back, paused, or never passed; "
               "2: bad input, or Prometheus unreachable.")
    parser.add_argument("-f", "--filename", required=True, type=Path, metavar="FILE",
                        help="the ModelRelease as YAML (as applied; a status, if present, gives the versions)")
    parser.add_argument("--prometheus", metavar="URL",
                        help="Prometheus to read history from (default: the spec's analysis.prometheus.url)")
    parser.add_argument("--start", required=True, metavar="TIME",
                        help="when the canary started serving: RFC 3339 (2024-01-01T00:00:00Z) or Unix seconds")
    parser.add_argument("--end", required=True, metavar="TIME", help="the last time a run may read, same formats")
    parser.add_argument("--canary-version", metavar="ID", help="the canary's version id (default: status.canary.id)")
    parser.add_argument("--stable-version", metavar="ID", help="the stable's version id (default: status.stable.id)")
    parser.add_argument("--png", type=Path, default=Path("backtest.png"), metavar="PATH",
                        help="where to draw the chart (default: backtest.png)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="time allowed per query (default: the spec's analysis.prometheus.timeout, else 10)")
    return parser


def parse_time(text: str, flag: str) -> datetime:
    """RFC 3339 with a zone, or Unix seconds, as an aware UTC datetime."""
    if _UNIX_SECONDS.match(text):
        return datetime.fromtimestamp(float(text), UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a time: give RFC 3339, e.g. 2024-01-01T00:00:00Z, "
                         "or Unix seconds, e.g. 1704067200") from None
    if moment.tzinfo is None:
        raise UsageError(f"{flag} {text!r} has no time zone: add one, e.g. {text}Z for UTC")
    return moment.astimezone(UTC)


def load_release(path: Path) -> Mapping[str, Any]:
    """The first ModelRelease in a YAML file."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except OSError as exc:
        raise UsageError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"-f {path}: not YAML ({exc})") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "ModelRelease":
            return document
    raise UsageError(f"-f {path}: holds no ModelRelease (a document with kind: ModelRelease)")


def _status_version(release: Mapping[str, Any], track: str) -> str | None:
    status = release.get("status")
    found = status.get(track) if isinstance(status, dict) else None
    version = found.get("id") if isinstance(found, dict) else None
    return version if isinstance(version, str) and version else None


@dataclass(frozen=True)
class Backtesting:
    """Everything the replay needs, checked."""

    spec: ModelReleaseSpec
    target: replay.Target
    connection: PrometheusConnection
    start: datetime
    end: datetime


def prepare(args: argparse.Namespace) -> Backtesting:
    release = load_release(args.filename)
    try:
        spec = parse_spec(release.get("spec"))
    except InvalidSpecError as exc:
        raise UsageError(f"-f {args.filename}: the spec is invalid:\n  " + "\n  ".join(exc.problems)) from None
    if not spec.analysis.checks:
        raise UsageError(f"-f {args.filename}: spec.analysis.checks is empty, so there is nothing to replay; "
                         "add a check")
    found = release.get("metadata")
    metadata: Mapping[str, Any] = found if isinstance(found, dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"-f {args.filename}: metadata.name is missing; name the release")
    canary = args.canary_version or _status_version(release, "canary")
    stable = args.stable_version or _status_version(release, "stable")
    missing = [flag for flag, version in (("--canary-version", canary), ("--stable-version", stable)) if not version]
    if missing:
        raise UsageError(f"{' and '.join(missing)}: the file's status names no such version; "
                         f"give {' and '.join(missing)}")
    assert canary is not None and stable is not None
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    interval = parse_duration(spec.analysis.interval)
    if end < start + interval:
        raise UsageError(f"--end: no run fits between --start and --end; the first run reads one interval "
                         f"({spec.analysis.interval}) after --start, so give an --end at least that much later")
    target = replay.Target(name, str(metadata.get("namespace") or "default"), canary, stable)
    return Backtesting(spec, target, _connection(spec, args), start, end)


def _connection(spec: ModelReleaseSpec, args: argparse.Namespace) -> PrometheusConnection:
    configured = spec.analysis.prometheus
    url = args.prometheus or (configured.url if configured else None)
    if not url:
        raise UsageError("--prometheus: the spec sets no analysis.prometheus.url; give --prometheus URL")
    if not re.match(r"^https?://", url):
        raise UsageError(f"--prometheus {url!r}: give a URL starting with http:// or https://")
    timeout = args.timeout
    if timeout is None:
        timeout = parse_duration(configured.timeout).total_seconds() if configured else _DEFAULT_TIMEOUT
    if timeout <= 0:
        raise UsageError(f"--timeout {timeout:g}: give a positive number of seconds")
    if configured and (configured.bearer_token_secret_ref or configured.basic_auth or configured.ca_secret_ref):
        print("modelrelease backtest: the spec's Prometheus credentials are Kubernetes Secrets, which a backtest "
              "does not read; querying without them", file=sys.stderr)
    return PrometheusConnection(url, timeout_seconds=timeout,
                                insecure_skip_verify=bool(configured and configured.insecure_skip_verify))


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped or captured: no terminal width to honour, and folded check names read badly.
        console.width = max(console.width, 160)
    return console


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        job = prepare(args)
        with PrometheusProvider(job.connection) as provider:
            result = replay.replay(job.spec, job.target, provider, job.start, job.end)
    except (UsageError, replay.TooManyRuns) as exc:
        print(f"modelrelease backtest: {exc}", file=sys.stderr)
        return 2
    if result.unreachable is not None:
        print(f"modelrelease backtest: Prometheus at {job.connection.url} answered no query: {result.unreachable}; "
              "check --prometheus", file=sys.stderr)
        return 2
    console = _console()
    table.print_backtest(result, console)
    try:
        from modelrelease.backtest.chart import write_chart

        console.print(f"chart: {write_chart(result, args.png)}")
    except ImportError:
        print("modelrelease backtest: the chart needs matplotlib: pip install 'model-release-operator[backtest]'",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"modelrelease backtest: --png {args.png}: cannot write it ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return 0 if result.passed else 1
