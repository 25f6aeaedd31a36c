"""
``python -m modelrelease_local up|down|demo``: the embedded default from the command line.

- ``up`` starts everything (see :mod:`.stack`) on 127.0.0.1, writes a kubeconfig, prints how to use
  kubectl with it, and stays in the foreground until Ctrl-C or ``down``;
- ``down`` stops a running ``up`` of the same state directory (through its pid file);
- ``demo [--rollback] [--report DIR] [--release FILE]`` runs one release to its end with a live view
  and writes a report (see :mod:`.demo`); it exits 0 when the release ended as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Sequence

import psutil
from rich.console import Console

from modelrelease_local.ports import port_is_free
from modelrelease_local.stack import LocalStack, StackSettings

DEFAULT_STATE_DIR = pathlib.Path(".modelrelease-local")
PID_FILE = "up.pid"
PREFERRED_PROMETHEUS_PORT = 9090  # the address examples/digits-demo.yaml names


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
    commands.add_parser("down", help="stop a running `up`")
    demo = commands.add_parser("demo", help="run a release to its end and write a report")
    demo.add_argument("--rollback", action="store_true", help="a faulty last-stage canary: ends RolledBack")
    demo.add_argument("--report", type=pathlib.Path, default=None, help="report directory (default reports/...)")
    demo.add_argument("--release", type=pathlib.Path, default=None,
                      help="a ModelRelease YAML (default examples/digits-demo.yaml)")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.add_argument("--rate", type=float, default=20.0, help="predict requests per second")
    demo.add_argument("--no-live", action="store_true", help="print the final frame only (no live view)")
    return parser


def _started(process: psutil.Process) -> str:
    """When the process started: a pid and this name one process, never a reused pid."""
    return repr(process.create_time())


def _alive(process: psutil.Process) -> bool:
    """Running (an exited process that its parent has not reaped yet, a zombie, is not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _running_up(pid_file: pathlib.Path) -> psutil.Process | None:
    """The live `up` of this state directory, if any (a stale file is removed)."""
    try:
        pid_text, started = pid_file.read_text().split()
        process = psutil.Process(int(pid_text))
        alive = _started(process) == started and _alive(process)
    except (OSError, ValueError, psutil.Error):
        alive = False
    if not alive:
        pid_file.unlink(missing_ok=True)
        return None
    return process


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    state_dir = args.state_dir.resolve()
    pid_file = state_dir / PID_FILE
    if (running := _running_up(pid_file)) is not None:
        console.print(f"[red]Already up (pid {running.pid}); stop it with `python -m modelrelease_local down`.[/red]")
        return 1
    prometheus_port = args.prometheus_port
    if prometheus_port is None and port_is_free(PREFERRED_PROMETHEUS_PORT):
        prometheus_port = PREFERRED_PROMETHEUS_PORT
    settings = StackSettings(state_dir=state_dir, api_port=args.api_port, prometheus_port=prometheus_port,
                             traffic_rate=args.rate, traffic=not args.no_traffic)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    state_dir.mkdir(parents=True, exist_ok=True)
    this = psutil.Process()
    pid_file.write_text(f"{this.pid} {_started(this)}")
    try:
        with LocalStack(settings) as stack:
            console.print(f"""[bold green]The embedded default is up.[/bold green]
  Kubernetes API  {stack.server.url}   (kubeconfig: {stack.kubeconfig})
  Prometheus      {stack.prometheus_url}
  Logs            {stack.operator_log}, {stack.artifact_root / 'logs'}/

Use it with kubectl:
  export KUBECONFIG={stack.kubeconfig}
  kubectl apply -f examples/digits-demo.yaml    # its spec.analysis.prometheus.url must be {stack.prometheus_url}
  kubectl get modelreleases -w

Stop with Ctrl-C, or `python -m modelrelease_local down` from another terminal.""", soft_wrap=True)
            while not stop.wait(1.0):
                if not stack.operator_alive():
                    console.print(f"[red]The operator exited; see {stack.operator_log}. Stopping.[/red]")
                    return 1
            console.print("Stopping...")
        return 0
    finally:
        pid_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    pid_file = args.state_dir.resolve() / PID_FILE
    process = _running_up(pid_file)
    if process is None:
        console.print("Nothing is up for this state directory.")
        return 0
    with contextlib.suppress(psutil.NoSuchProcess):
        process.terminate()  # it may have exited since: then there is nothing to stop
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not _alive(process):
            console.print(f"Stopped (pid {process.pid}).")
            return 0
        time.sleep(0.2)
    console.print(f"[red]pid {process.pid} is still stopping after 120 s.[/red]")
    return 1


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from modelrelease_local.demo import load_release, run_demo

    settings = StackSettings(state_dir=args.state_dir.resolve() / "demo", traffic_rate=args.rate)
    result = run_demo(load_release(args.release), settings=settings, rollback=args.rollback, report_dir=args.report,
                      console=console, live=not args.no_live, timeout=args.timeout)
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
