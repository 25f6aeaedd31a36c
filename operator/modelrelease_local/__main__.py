"""
``python -m modelrelease_local up|down|demo``: the embedded default from the command line.

- ``up`` starts everything (see :mod:`.stack`) on 127.0.0.1, writes a kubeconfig, prints how to use
  kubectl with it, and stays in the foreground until Ctrl-C, SIGTERM, SIGHUP or ``down``; on a state
  directory of an earlier ``up`` it resumes every release; it refuses a directory another stack runs on;
- ``down`` stops every stack running on the state directory or below it (the demo's in ``demo/``),
  through their pid files;
- ``demo [--rollback] [--report DIR] [--release FILE] [--tester-share S]`` runs one release to its end
  with a live view and writes a report (see :mod:`.demo`); it exits 0 when the release ended as
  expected. FILE may hold the HTTPRoutes the release routes by beside it; a share S of the generated
  requests carries the tester header ``X-Canary: always`` (a step's headerRoute sends them to the canary).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psutil
import yaml
from rich.console import Console

from modelrelease_local.faults import FaultInjector
from modelrelease_local.instance import PID_FILE, StateInUse, describe, running_stacks
from modelrelease_local.instance import alive as _alive
from modelrelease_local.instance import running_stack as _running_up
from modelrelease_local.instance import started as _started
from modelrelease_local.ports import port_is_free
from modelrelease_local.stack import LocalStack, StackSettings, remembered_port

__all__ = ["PID_FILE", "_running_up", "_started", "build_parser", "main"]

DEFAULT_STATE_DIR = pathlib.Path(".modelrelease-local")
PREFERRED_PROMETHEUS_PORT = 9090  # the address examples/digits-demo.yaml names
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _share(text: str) -> float:
    """A share of requests, 0 to 1 (argparse names the option in the message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give a share from 0 to 1, e.g. 0.05") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 to 1: give a share, e.g. 0.05 for 5% of requests")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelrelease_local",
                                     description="The embedded default: a local Kubernetes API, operator, "
                                                 "trainers, model servers, Prometheus and traffic.")
    parser.add_argument("--state-dir", type=pathlib.Path, default=DEFAULT_STATE_DIR,
                        help=f"kubeconfig, artifacts, logs and metrics (default {DEFAULT_STATE_DIR}/)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the local parts do")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and stay in the foreground")
    up.add_argument("--api-port", type=int, default=0, help="port of the Kubernetes API (default: any free one)")
    up.add_argument("--prometheus-port", type=int, default=None,
                    help=f"default {PREFERRED_PROMETHEUS_PORT} when free, else any free one")
    up.add_argument("--rate", type=float, default=20.0, help="predict requests per second per release")
    up.add_argument("--no-traffic", action="store_true", help="send no generated traffic")
    up.add_argument("--tester-share", type=_share, default=0.0,
                    help="the share of requests (0 to 1) sent with the header X-Canary: always (default 0)")
    up.add_argument("--faults", type=pathlib.Path, default=None,
                    help="a fault plan for the API server to inject (YAML or JSON; see docs/architecture.md)")
    commands.add_parser("down", help="stop a running `up`")
    demo = commands.add_parser("demo", help="run a release to its end and write a report")
    demo.add_argument("--rollback", action="store_true", help="a faulty last-stage canary: ends RolledBack")
    demo.add_argument("--report", type=pathlib.Path, default=None, help="report directory (default reports/...)")
    demo.add_argument("--release", type=pathlib.Path, default=None,
                      help="a ModelRelease YAML, maybe with the HTTPRoutes it routes by as further documents "
                           "(default examples/digits-demo.yaml)")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.add_argument("--rate", type=float, default=20.0, help="predict requests per second")
    demo.add_argument("--tester-share", type=_share, default=0.0,
                      help="the share of requests (0 to 1) sent with the header X-Canary: always (default 0)")
    demo.add_argument("--no-live", action="store_true", help="print the final frame only (no live view)")
    return parser


class _Interrupted(BaseException):
    """A stop signal arrived: unwinds to the stack's orderly stop (like KeyboardInterrupt, for any signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (its terminal closed) all stop the stack in order, once: a signal that
    arrives while it stops is let go, so that the stop runs to its end."""
    def interrupt(signum: int, _: object) -> None:
        for sig in STOP_SIGNALS:  # a handler, not SIG_IGN: an ignored signal would be inherited by children
            signal.signal(sig, lambda *_: None)
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prometheus_port(args: argparse.Namespace, state_dir: pathlib.Path) -> int | None:
    """Asked for; else the last run's (a release names its address); else 9090 when free; else any."""
    if args.prometheus_port is not None:
        return int(args.prometheus_port)
    remembered = remembered_port(state_dir, "prometheus")
    if remembered is not None:
        return remembered
    return PREFERRED_PROMETHEUS_PORT if port_is_free(PREFERRED_PROMETHEUS_PORT) else None


def _fault_plan(path: pathlib.Path | None) -> dict[str, Any] | None:
    """The plan of ``--faults``, checked before anything starts: a bad one names the file and the field."""
    if path is None:
        return None
    try:
        plan = yaml.safe_load(path.read_text(encoding="utf-8"))
        FaultInjector().load(plan)
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise SystemExit(f"--faults {path}: {exc}") from None
    return plan if isinstance(plan, dict) else None


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    state_dir = args.state_dir.resolve()
    if (running := _running_up(state_dir / PID_FILE)) is not None:  # the lock decides; this answers before any work
        console.print(f"[red]Already up on {state_dir}: {describe(running)}. Stop it with "
                      f"`python -m modelrelease_local --state-dir {state_dir} down`.[/red]", soft_wrap=True)
        return 1
    settings = StackSettings(state_dir=state_dir, api_port=args.api_port,
                             prometheus_port=_prometheus_port(args, state_dir), traffic_rate=args.rate,
                             traffic=not args.no_traffic, tester_share=args.tester_share,
                             faults=_fault_plan(args.faults))
    try:
        with _stopping_on_signals(), LocalStack(settings) as stack:
            console.print(f"""[bold green]The embedded default is up.[/bold green]
  Kubernetes API  {stack.server.url}   (kubeconfig: {stack.kubeconfig})
  Prometheus      {stack.prometheus_url}
  Logs            {stack.operator_log}, {stack.artifact_root / 'logs'}/

Use it with kubectl:
  export KUBECONFIG={stack.kubeconfig}
  kubectl apply -f examples/digits-demo.yaml    # its spec.analysis.prometheus.url must be {stack.prometheus_url}
  kubectl get modelreleases -w

Stop with Ctrl-C, or `python -m modelrelease_local down` from another terminal.""", soft_wrap=True)
            told: list[str] = []
            while True:
                time.sleep(1.0)
                if (restarts := stack.restarts(countdown=False)) != told:
                    for line in set(restarts) - set(told):
                        console.print(f"[yellow]{line}[/yellow] (log: {stack.state_dir / 'logs'}/)", soft_wrap=True)
                    told = restarts
    except StateInUse as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        return 1
    except _Interrupted:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            console.print("Stopped.")
    return 0


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    running = running_stacks(args.state_dir.resolve())
    if not running:
        console.print("Nothing is up for this state directory.")
        return 0
    for state_dir, process in running:
        console.print(f"Stopping the stack on {state_dir}: {describe(process)}", soft_wrap=True)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()  # it may have exited since: then there is nothing to stop
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(_alive(process) for _, process in running):
        time.sleep(0.2)
    still = [process.pid for _, process in running if _alive(process)]
    if still:
        console.print(f"[red]pid {', '.join(map(str, still))} still stopping after 120 s.[/red]")
        return 1
    console.print(f"Stopped (pid {', '.join(str(process.pid) for _, process in running)}).")
    return 0


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from modelrelease_local.demo import DemoInputError, load_manifests, run_demo

    try:
        manifests = load_manifests(args.release)
    except (OSError, yaml.YAMLError, DemoInputError) as exc:
        console.print(f"[red]--release: {exc}[/red]", soft_wrap=True)
        return 2
    settings = StackSettings(state_dir=args.state_dir.resolve() / "demo", traffic_rate=args.rate,
                             tester_share=args.tester_share)
    try:
        with _stopping_on_signals():
            result = run_demo(manifests.release, settings=settings, rollback=args.rollback, report_dir=args.report,
                              console=console, live=not args.no_live, timeout=args.timeout, routes=manifests.routes)
    except (StateInUse, DemoInputError) as exc:
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        return 1
    except _Interrupted as stopped:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            console.print(f"Stopped by {signal.Signals(stopped.signum).name}; everything the demo started is stopped.")
        return 128 + stopped.signum
    if not result.ok:
        console.print(f"[red]The release ended {result.phase}, expected {result.expected}.[/red]")
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    console = Console()
    commands = {"up": cmd_up, "down": cmd_down, "demo": cmd_demo}
    return commands[args.command](args, console)


if __name__ == "__main__":
    sys.exit(main())
