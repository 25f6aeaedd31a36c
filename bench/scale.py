"""The real operator process at scale: settled and progressing ModelReleases, against the emulator.

    .venv/bin/python bench/scale.py            the quick run (settled N=10, 50; progressing N=20), ~2.5 min
    .venv/bin/python bench/scale.py --full     settled N=10, 100, 1000; progressing N=100, 300, ~6-7 min
    .venv/bin/python bench/scale.py --full --large   settled N=5000 as well

The default is the quick run, so that `make bench` stays short on a shared 2-core machine; --quick
says the same explicitly. Every scenario gets a fresh emulator process (API server and scripted Job
and Deployment controllers, bench/scale_support.py) and a fresh `python -m modelrelease run -A
--metrics-port P`; releases are created and read through the emulator's control port, straight in
its store, so every request in its log is the operator's. Fake Prometheus (tests/operator/fakes.py,
healthy values) runs in this process. Everything listens on 127.0.0.1; a global deadline (--deadline)
and Ctrl-C stop every process group this started.

Settled: N one-stage releases (train, then stable at once), all Released, --settle seconds of rest,
then a --window of measurement: the operator's RSS and open fds at the end, its CPU (user+system
delta over the window, % of one core), its TCP sockets (sampled every second), its non-watch API
requests and writes per second and the watch streams it (re)opened, the reconcile passes it counted
(/metrics), and the emulator process's CPU over the same window.

Progressing: N two-stage releases (the first stage becomes stable directly, the second canaries in
5 steps of 2 s, analysis every 1 s), from creation until all are Released. Step lag: from the moment
a step could end (stepStartedAt + 2 s) to the stored status patch that advanced it (to the next step,
or out of the last one into Promoting), and, at the whole seconds the status carries, to the next
step's stepStartedAt. Writes per step: each release's writes from its first canary step to the patch
that set Promoting (Events: its StepAdvanced and Promoting ones), over its 5 advances. Passes per
release: the reconcile_passes_total delta over the run, divided by N.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import scale_support as s
from tests.operator.fakes import FakePrometheus

ENDED_BADLY = ("Failed", "RolledBack", "Invalid")


class DeadlineReached(Exception):
    pass


class KeepAlivePrometheus(FakePrometheus):
    """The operator's fake Prometheus, answering HTTP/1.1 so that one analysis run keeps one connection."""

    def _handler(self) -> Any:
        handler = super()._handler()
        handler.protocol_version = "HTTP/1.1"
        return handler


class World:
    """One scenario: the emulator process, the operator process, and (optionally) fake Prometheus."""

    def __init__(self, processes: s.Processes, name: str, training_delay: float, prometheus: bool = False):
        self.processes, self.name = processes, name
        self.prometheus = KeepAlivePrometheus().start() if prometheus else None
        if self.prometheus:
            self.prometheus.set("error_rate", canary=0.0, stable=0.0)
            self.prometheus.set("requests", canary=100.0, stable=100.0)
            self.prometheus.set("latency_p99", canary=0.05, stable=0.05)
        self.emulator = s.Emulator(processes, training_delay, f"{name}-emulator")
        self.metrics_port = s.free_port()
        self.operator = processes.start(f"{name}-operator", s.operator_argv(self.metrics_port),
                                        env={"KUBECONFIG": str(self.emulator.kubeconfig)})
        self.op, self.em = psutil.Process(self.operator.pid), psutil.Process(self.emulator.process.pid)
        s.wait_until(self._ready, 60, "the operator's watches and /metrics")

    def _ready(self) -> bool:
        if self.operator.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{self.processes.log_tail(self.name + '-operator')}")
        watched = {r[2] for r in self.emulator.requests() if r[4]}
        if not all(f"GET {kind}" in watched for kind in s.KINDS):
            return False
        with contextlib.suppress(OSError):
            return bool(s.scrape(self.metrics_port))
        return False

    def wait_ended(self, n: int, timeout: float) -> tuple[float, int, list[Any]]:
        """Wait until all n releases have ended; (seconds, how many did not end Released, some of those)."""
        started = time.monotonic()

        def ended() -> dict[str, int] | None:
            if self.operator.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{self.processes.log_tail(self.name + '-operator')}")
            phases = self.emulator.phases()
            return phases if sum(phases.get(p, 0) for p in ("Released", *ENDED_BADLY)) == n else None
        phases = s.wait_until(ended, timeout, f"{n} releases to end", every=1.0)
        bad = n - phases.get("Released", 0)
        return time.monotonic() - started, bad, self.emulator.call("/failures") if bad else []

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds so far (user + system) of the operator, the emulator and this process."""
        return tuple(sum(p.cpu_times()[:2]) for p in (self.op, self.em, psutil.Process()))  # type: ignore[return-value]

    def close(self) -> None:
        self.processes.stop()
        if self.prometheus:
            self.prometheus.stop()


def settled(processes: s.Processes, n: int, window: float, settle: float, limit: float) -> dict[str, Any]:
    world = World(processes, f"settled-{n}", training_delay=0.1)
    try:
        world.emulator.create("s", n, s.settled_spec())
        took, bad, failures = world.wait_ended(n, limit)
        time.sleep(settle)
        before, cpu0, t0 = s.scrape(world.metrics_port), world.cpu(), time.time()
        samples = []
        while time.time() < t0 + window:
            samples.append((world.op.memory_info().rss, world.op.num_fds(), len(world.op.net_connections("tcp")),
                            time.time() - t0))
            time.sleep(max(0.0, min(1.0, t0 + window - time.time())))
        samples.append((world.op.memory_info().rss, world.op.num_fds(), len(world.op.net_connections("tcp")),
                        time.time() - t0))
        cpu1, t1 = world.cpu(), time.time()
        after = s.scrape(world.metrics_port)
        rows = world.emulator.requests(t0, t1)
    finally:
        world.close()
    span = t1 - t0
    conns = [c for _, _, c, _ in samples]
    steady = max([0.0] + [b[3] for a, b in itertools.pairwise(samples) if a[2] != b[2]])  # the last change
    return {"n": n, "took": took, "bad": bad, "failures": failures, "rss": samples[-1][0] / 2**20,
            "fds": samples[-1][1],
            "conns": (conns[0], conns[-1], min(conns), max(conns)), "steady": steady,
            "watched": collections.Counter(r[2].split()[-1] for r in rows if r[4]),
            "cpu": (cpu1[0] - cpu0[0]) / span * 100, "emu_cpu": (cpu1[1] - cpu0[1]) / span * 100,
            "rps": sum(1 for r in rows if not r[4]) / span, "wps": sum(1 for r in rows if r[1] != "GET") / span,
            "watches": sum(1 for r in rows if r[4]), "passes": sum(s.passes(before, after).values())}


def progressing(processes: s.Processes, n: int, limit: float) -> dict[str, Any]:
    world = World(processes, f"progressing-{n}", training_delay=0.5, prometheus=True)
    try:
        assert world.prometheus is not None
        before, cpu0, t0 = s.scrape(world.metrics_port), world.cpu(), time.time()
        world.emulator.create("p", n, s.progressing_spec(world.prometheus.url))
        took, bad, failures = world.wait_ended(n, limit)
        cpu1, t1 = world.cpu(), time.time()
        after = s.scrape(world.metrics_port)
        time.sleep(2)  # kopf posts Events after the status patches
        rows = world.emulator.requests(t0)
    finally:
        world.close()
    patch_lags, status_lags = s.step_lags(rows)
    kinds, steps = s.canary_writes(rows)
    span = t1 - t0
    return {"n": n, "took": took, "bad": bad, "failures": failures, "patch_lags": patch_lags,
            "status_lags": status_lags, "kinds": kinds,
            "steps": steps, "passes": {k: v / n for k, v in s.passes(before, after).items()},
            "cpu": (cpu1[0] - cpu0[0]) / span * 100, "emu_cpu": (cpu1[1] - cpu0[1]) / span * 100,
            "bench_cpu": (cpu1[2] - cpu0[2]) / span * 100,
            "writes": collections.Counter(r[2] for r in rows if r[1] != "GET"),
            "rejected": sum(1 for r in rows if r[1] != "GET" and r[3] in (409, 422)), "reads": sum(
                1 for r in rows if r[1] == "GET" and not r[4])}


def verdict(value: float, goal: float, unit: str = "", *, below: bool = True, strict: bool = True) -> str:
    met = (value < goal if strict else value <= goal) if below else value == goal
    return "goal met" if met else f"missed by {value - goal:.3g}{unit}"


def print_failures(kind: str, results: list[dict[str, Any]]) -> None:
    for r in results:
        if r["bad"]:
            print(f"  {kind} N={r['n']}: {r['bad']} did not end Released, e.g. {r['failures'][:2]}")


def print_settled(results: list[dict[str, Any]], window: float) -> None:
    print(f"\nSettled releases (all Released, then a {window:g} s window; CPU in % of one core)")
    print(f"{'N':>5} {'all ended':>11} {'RSS MiB':>8} {'op CPU':>7} {'req/s':>6} {'writes/s':>8} {'watch opens':>11} "
          f"{'passes':>6} {'fds':>5} {'TCP start→end (min-max)':>23} {'TCP last change':>15} {'emulator CPU':>12}")
    for r in results:
        first, last, low, high = r["conns"]
        change = f"+{r['steady']:.0f} s" if r["steady"] else "none"
        print(f"{r['n']:>5} {r['took']:>10.1f}s {r['rss']:>8.1f} {r['cpu']:>6.2f}% {r['rps']:>6.2f} "
              f"{r['wps']:>8.2f} {r['watches']:>11} {r['passes']:>6.0f} {r['fds']:>5} "
              f"{f'{first}→{last} ({low}-{high})':>23} {change:>15} {r['emu_cpu']:>11.2f}%")
    for r in results:
        if r["watches"]:
            print(f"  N={r['n']}: watch streams (re)opened in the window: {dict(r['watched'])}")
    print_failures("settled", results)


def print_progressing(results: list[dict[str, Any]]) -> None:
    print(f"\nProgressing releases: step lag in seconds, from stepStartedAt + {s.STEP_SECONDS} s")
    print(f"{'N':>5} {'advanced when':<30} {'steps':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}")
    for r in results:
        for label, lags in (("the status patch was stored", r["patch_lags"]),
                            ("next stepStartedAt (whole s)", r["status_lags"])):
            figures = " ".join(f"{s.percentile(lags, q):>6.2f}" for q in (50, 90, 99, 100)) if lags else "   n/a"
            print(f"{r['n']:>5} {label:<30} {len(lags):>6} {figures}")
    print("\nProgressing releases: writes per canary step, passes per release, CPU over the whole run")
    print(f"{'N':>5} {'run':>6} {'steps':>6} {'deploy':>7} {'status':>7} {'event':>6} {'other':>6} {'total':>6} "
          f"{'passes ok/conflict/error':>24} {'op CPU':>7} {'emu CPU':>8} {'bench+prom':>10}")
    for r in results:
        k, steps = r["kinds"], max(1, r["steps"])
        other = sum(v for key, v in k.items() if key not in ("deployment", "status", "event"))
        per = [k["deployment"] / steps, k["status"] / steps, k["event"] / steps, other / steps]
        passes = "/".join(f"{r['passes'].get(x, 0):.1f}" for x in ("ok", "conflict", "error"))
        print(f"{r['n']:>5} {r['took']:>5.0f}s {r['steps']:>6} " + " ".join(f"{v:>{w}.2f}" for v, w in zip(
            [*per, sum(per)], (7, 7, 6, 6, 6), strict=True)) +
              f" {passes:>24} {r['cpu']:>6.1f}% {r['emu_cpu']:>7.1f}% {r['bench_cpu']:>9.1f}%")
    for r in results:
        whole = ", ".join(f"{key} {v}" for key, v in r["writes"].most_common())
        print(f"  N={r['n']}, all writes of the run ({sum(r['writes'].values()) / r['n']:.1f} per release, "
              f"{r['rejected']} answered 409/422, {r['reads']} non-watch reads): {whole}")
    print_failures("progressing", results)


def print_goals(settled_results: list[dict[str, Any]], progressing_results: list[dict[str, Any]], quick: bool):
    print("\nGoals" + (" (quick run: judged at the largest N here, not at 1000 and 300)" if quick else ""))
    big = next((r for r in settled_results if r["n"] == 1000), settled_results[-1]) if settled_results else None
    if big:
        n, (first, last, low, high) = big["n"], big["conns"]
        constant = low == high
        print(f"  {n} settled, RSS under 150 MiB:       {big['rss']:8.1f} MiB    {verdict(big['rss'], 150, ' MiB')}")
        print(f"  {n} settled, CPU under 1% of a core:  {big['cpu']:8.2f} %      {verdict(big['cpu'], 1, ' points')}")
        print(f"  {n} settled, 0 requests/s:            {big['rps']:8.2f} req/s  "
              f"{verdict(big['rps'], 0, ' req/s', below=False)}")
        print(f"  {n} settled, constant connections:    {f'{low}-{high}':>8}        "
              f"{'goal met' if constant else f'missed: {first} at the start, {last} at the end'}")
    progress = next((r for r in progressing_results if r["n"] == 300), None) or (
        progressing_results[-1] if progressing_results else None)
    if progress:
        n, lags = progress["n"], progress["patch_lags"]
        p99 = s.percentile(lags, 99) if lags else float("inf")
        k, steps = progress["kinds"], max(1, progress["steps"])
        per_step = sum(k.values()) / steps
        print(f"  {n} progressing, step lag p99 under 1 s: {p99:6.2f} s      {verdict(p99, 1, ' s')}")
        print(f"  {n} progressing, writes/step <= 3.6:     {per_step:6.2f}        "
              f"{verdict(per_step, 3.6, ' writes', strict=False)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="settled N=10, 50; progressing N=20 (the default)")
    mode.add_argument("--full", action="store_true", help="settled N=10, 100, 1000; progressing N=100, 300")
    parser.add_argument("--large", action="store_true", help="with --full: settled N=5000 as well")
    parser.add_argument("--window", type=float, default=30.0, help="settled measurement window, s (default 30)")
    parser.add_argument("--settle", type=float, default=10.0, help="rest before the window, s (default 10)")
    parser.add_argument("--deadline", type=float, default=None, help="stop everything after this many s")
    args = parser.parse_args()
    quick = not args.full
    settled_ns = [10, 50] if quick else [10, 100, 1000] + ([5000] if args.large else [])
    progressing_ns = [20] if quick else [100, 300]
    deadline = args.deadline or (240 if quick else 900 + (600 if args.large else 0)) + 3 * args.window

    def stop(signum: int, _: Any) -> None:
        raise DeadlineReached("the global deadline") if signum == signal.SIGALRM else KeyboardInterrupt

    signal.signal(signal.SIGALRM, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.alarm(int(deadline))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the children inherit it
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    settled_results: list[dict[str, Any]] = []
    progressing_results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as workdir:
        processes = s.Processes(Path(workdir))
        try:
            for n in settled_ns:
                print(f"settled N={n} ...", flush=True)
                settled_results.append(settled(processes, n, args.window, args.settle, 60 + n * 0.3))
            for n in progressing_ns:
                print(f"progressing N={n} ...", flush=True)
                progressing_results.append(progressing(processes, n, 90 + n * 1.0))
        except (DeadlineReached, KeyboardInterrupt, TimeoutError, RuntimeError) as exc:
            print(f"stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            signal.alarm(0)
            processes.stop()
    if settled_results:
        print_settled(settled_results, args.window)
    if progressing_results:
        print_progressing(progressing_results)
    print_goals(settled_results, progressing_results, quick)
    if len(settled_results) < len(settled_ns) or len(progressing_results) < len(progressing_ns):
        sys.exit(1)


if __name__ == "__main__":
    main()
