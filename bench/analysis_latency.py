"""How long a failing canary takes to get a Fail verdict, against a real Prometheus.

Setup: fake stable and canary model servers scraped every second by a private Prometheus; an analysis
loop like the operator's (measure + judge every interval, on a fixed schedule) with the error-rate
preset. At a random moment the canary starts answering every request with a 5xx; the figure is the
time from that moment to the Fail verdict. The expected bound is one analysis interval (the run that
just missed it) plus one scrape (until Prometheus sees it) plus the run's own query time.

Run from the repository root:  .venv/bin/python bench/analysis_latency.py [--trials 5]
Needs /usr/bin/prometheus (Debian: apt-get install -y prometheus).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the fake servers in tests/

from tests.prometheus.fake_modelserver import Behaviour, TrackExporter, TrafficDriver

from modelrelease.adapters.prometheus import PrometheusConnection, PrometheusProvider
from modelrelease.api.spec import AnalysisSpec
from modelrelease.core.analysis import judge
from modelrelease.core.measurement import ReleaseVariables, build_request
from modelrelease.runtime.measure import read_run
from modelrelease_local.prometheus import PrometheusProcess, ScrapeTarget

ANALYSIS_INTERVAL = 5.0
SCRAPE_INTERVAL = 1.0


@dataclass(frozen=True)
class Trial:
    detection: float
    """Seconds from the first failing request to the Fail verdict."""
    query_time: float
    """Seconds the detecting run spent querying Prometheus."""
    runs: int
    """Analysis runs from the failure to the verdict (the detecting one included)."""

    @property
    def bound(self) -> float:
        return ANALYSIS_INTERVAL + SCRAPE_INTERVAL + self.query_time


def measure_latency(trials: int, seed: int) -> list[Trial]:
    chooser = random.Random(seed)
    stable, canary = TrackExporter("stable"), TrackExporter("canary")
    driver = TrafficDriver()
    driver.add(stable, "bench", "v1", Behaviour())
    failing = driver.add(canary, "bench", "v2", Behaviour())
    driver.start()
    spec = AnalysisSpec.model_validate(
        {
            "prometheus": {"url": "http://placeholder"},
            "interval": f"{ANALYSIS_INTERVAL:g}s",
            "checks": [{"name": "errors", "preset": "error-rate"}],
        }
    )
    variables = ReleaseVariables("bench", "default", "bench", "v2", "v1", timedelta(seconds=ANALYSIS_INTERVAL))
    results: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="analysis-latency-") as workdir, PrometheusProcess(
        workdir,
        targets=[ScrapeTarget(stable.address), ScrapeTarget(canary.address)],
        scrape_interval=SCRAPE_INTERVAL,
    ) as prometheus, PrometheusProvider(PrometheusConnection(prometheus.url, timeout_seconds=2)) as provider:
        state, injected_at, runs_since = "steady", 0.0, 0
        injected = threading.Event()

        def inject() -> None:
            nonlocal injected_at
            failing.behaviour = replace(failing.behaviour, error_share=1.0)
            injected_at = time.monotonic()
            injected.set()

        next_run = time.monotonic()
        while len(results) < trials:
            time.sleep(max(0.0, next_run - time.monotonic()))
            next_run += ANALYSIS_INTERVAL  # a fixed schedule, as the operator keeps
            started = time.monotonic()
            [measurement] = read_run(provider, build_request(spec.checks, variables)).measurements()
            verdict = judge(spec.checks[0], measurement, spec.min_sample_count).verdict
            done = time.monotonic()
            if state == "steady" and verdict == "Pass":
                # Fail at a random phase of both the analysis schedule and the scrapes.
                injected.clear()
                threading.Timer(chooser.uniform(0, ANALYSIS_INTERVAL), inject).start()
                state, runs_since = "armed", 0
            elif state == "armed" and injected.is_set():
                runs_since += 1 if started >= injected_at else 0
                if verdict == "Fail":
                    results.append(Trial(done - injected_at, done - started, runs_since))
                    print(f"  trial {len(results)}: Fail after {done - injected_at:.2f}s", flush=True)
                    failing.behaviour = replace(failing.behaviour, error_share=0.0)
                    state = "recovering"
            elif state == "recovering" and verdict == "Pass":
                state = "steady"
    driver.stop()
    stable.stop()
    canary.stop()
    return results


def print_table(results: list[Trial]) -> None:
    print()
    print(f"analysis interval {ANALYSIS_INTERVAL:g}s, scrape interval {SCRAPE_INTERVAL:g}s, check error-rate "
          "(canary switches to 100% 5xx at a random moment)")
    print(f"{'trial':>5}  {'failure -> Fail':>15}  {'bound':>7}  {'query time':>10}  {'runs':>4}  within")
    for number, trial in enumerate(results, 1):
        within = "yes" if trial.detection <= trial.bound else "NO"
        print(f"{number:>5}  {trial.detection:>14.2f}s  {trial.bound:>6.2f}s  {trial.query_time * 1000:>8.1f}ms"
              f"  {trial.runs:>4}  {within}")
    detections = [t.detection for t in results]
    print(f"{'':>5}  min {min(detections):.2f}s  mean {sum(detections) / len(detections):.2f}s  "
          f"max {max(detections):.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print_table(measure_latency(args.trials, args.seed))


if __name__ == "__main__":
    main()
