"""Restarts at moments hypothesis chooses: whole releases with the operator killed one to four times.

Each example is a kill schedule. A kill waits for a milestone: the k-th point of observed progress,
counting every change of the release's (phase, stageIndex, stepIndex) and every change of a
Deployment's spec.replicas, in the order watches on the API see them; then a drawn delay, then
SIGKILL or SIGTERM; the operator starts again at once. The release must end as the uninterrupted one
does, and the operator's promises must hold at every event the watches saw, whatever the schedule.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import kubernetes
import pytest
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st

from tests.operator.conftest import GROUP, PLURAL, VERSION, FreshCluster, Harness, release_spec, terminate_operator

RELEASE, NAMESPACE = "digits", "default"
STABLE, CANARY = f"{RELEASE}-stable", f"{RELEASE}-canary"
TRAINING_SECONDS = 1.0
SCHEDULES = 10  # each is a whole release with up to four restarts: about 20 s on two cores
SETTLED = 120.0  # a bound on a release that is restarted four times, not a performance limit

Signal = Literal["SIGKILL", "SIGTERM"]


@dataclass(frozen=True)
class Kill:
    """Once milestone `index` (from 0) has been seen, wait `delay` seconds, then send `signal`."""

    index: int
    delay: float
    signal: Signal
    milestone: str  # what the milestone was in the uninterrupted release, for the reader

    def __str__(self) -> str:
        return f"{self.signal} {self.delay:.2f}s after milestone {self.index} ({self.milestone})"


@dataclass
class Recording:
    """What the watches saw, each kind in resourceVersion order, and where the operator was killed."""

    releases: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (event type, Job name)
    kills: list[int] = field(default_factory=list)  # the API's resourceVersion once each killed process was gone
    errors: list[str] = field(default_factory=list)

    def statuses(self) -> list[tuple[int, dict[str, Any]]]:
        """(resourceVersion, the release's status) at each write that changed the status."""
        seen: list[tuple[int, dict[str, Any]]] = []
        for release in self.releases:
            status = release.get("status") or {}
            if status.get("phase") and (not seen or seen[-1][1] != status):
                seen.append((int(release["metadata"]["resourceVersion"]), status))
        return seen

    def progress(self) -> list[tuple[int, tuple[str, int, int]]]:
        """(resourceVersion, position) at each change of (phase, stageIndex, stepIndex)."""
        positions: list[tuple[int, tuple[str, int, int]]] = []
        for version, status in self.statuses():
            position = (status["phase"], status.get("stageIndex", 0), status.get("stepIndex", 0))
            if not positions or positions[-1][1] != position:
                positions.append((version, position))
        return positions

    def milestones(self) -> list[str]:
        """Progress and replica changes together, in the API's order."""
        merged = [(version, "{} stage {} step {}".format(*position)) for version, position in self.progress()]
        merged += [(version, " ".join(f"{name}={n}" for name, n in sorted(state.items())))
                   for version, _, state in self.scaling()]
        return [label for _, label in sorted(merged)]

    def scaling(self) -> list[tuple[int, int, dict[str, int]]]:
        """(resourceVersion, process, replicas of each Deployment) after each change of a spec.replicas;
        process counts the kills before that write, so it tells which operator process made it."""
        replicas: dict[str, int] = {}
        states: list[tuple[int, int, dict[str, int]]] = []
        for deployment in self.deployments:
            name, wanted = deployment["metadata"]["name"], deployment["spec"].get("replicas", 1)
            if replicas.get(name) != wanted:
                replicas[name] = wanted
                version = int(deployment["metadata"]["resourceVersion"])
                states.append((version, sum(k < version for k in self.kills), dict(replicas)))
        return states

    def released(self) -> bool:
        return any((r.get("status") or {}).get("phase") == "Released" for r in self.releases)


class Recorder:
    """Watches the release, its Deployments and its Jobs over HTTP (the kubernetes client), from threads."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self.recording = Recording()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Recorder:
        custom, apps, batch = self.harness.custom, self.harness.apps, self.harness.batch
        self._watch("releases", lambda **kw: custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, **kw), lambda _, obj: self.recording.releases.append(obj))
        self._watch("deployments", lambda **kw: apps.list_namespaced_deployment(NAMESPACE, **kw),
                    lambda _, obj: self.recording.deployments.append(obj))
        self._watch("jobs", lambda **kw: batch.list_namespaced_job(NAMESPACE, **kw),
                    lambda kind, obj: self.recording.jobs.append((kind, obj["metadata"]["name"])))
        return self

    def current_version(self) -> int:
        listed = self.harness.core.list_namespaced_config_map(NAMESPACE, limit=1, _preload_content=False)
        return int(json.loads(listed.data)["metadata"]["resourceVersion"])

    def _watch(self, what: str, list_fn: Callable[..., Any], record: Callable[[str, dict[str, Any]], None]) -> None:
        version = json.loads(list_fn(_preload_content=False).data)["metadata"]["resourceVersion"]

        def follow() -> None:
            nonlocal version
            while not self._stop.is_set():
                try:
                    for event in kubernetes.watch.Watch().stream(list_fn, resource_version=version, timeout_seconds=1):
                        obj = event["raw_object"]
                        version = obj["metadata"]["resourceVersion"]
                        with self._changed:
                            record(event["type"], obj)
                            self._changed.notify_all()
                except Exception as error:  # a broken watch is a failed recording, reported by the checks
                    with self._changed:
                        self.recording.errors.append(f"the {what} watch broke: {error!r}")
                        self._changed.notify_all()
                    return

        thread = threading.Thread(target=follow, daemon=True, name=f"watch-{what}")
        thread.start()
        self._threads.append(thread)

    def wait(self, reached: Callable[[Recording], bool], timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: reached(self.recording) or bool(self.recording.errors), timeout)

    def stop(self) -> Recording:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.recording


def run_release(directory: pathlib.Path, schedule: list[Kill]) -> tuple[Recording, list[str]]:
    """One release from creation to Released, killed as scheduled: what the watches saw, the kills done."""
    with FreshCluster(directory) as harness:
        harness.training.delay = TRAINING_SECONDS
        recorder = Recorder(harness).start()
        harness.apply(RELEASE, release_spec(harness.prometheus.url))
        done: list[str] = []
        for kill in schedule:
            def reached(recording: Recording, kill: Kill = kill) -> bool:
                return len(recording.milestones()) > kill.index or recording.released()
            recorder.wait(reached, SETTLED)
            if recorder.recording.released():
                break  # the rest of the schedule lies past the end of this release
            time.sleep(kill.delay)
            if kill.signal == "SIGTERM":
                terminate_operator(harness)
            else:
                harness.kill_operator()
            recorder.recording.kills.append(recorder.current_version())
            harness.start_operator()
            done.append(str(kill))
        harness.wait_phase(RELEASE, "Released", timeout=SETTLED)
        recorder.wait(lambda recording: recording.released(), SETTLED)
        return recorder.stop(), done


@dataclass(frozen=True)
class Reference:
    """The uninterrupted release."""

    history: list[tuple[str, str]]
    jobs: list[str]
    progress: list[tuple[str, int, int]]
    milestones: list[str]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Recorded once per session: what every killed release must end with."""
    recording, _ = run_release(tmp_path_factory.mktemp("reference"), [])
    check_invariants(recording)
    final = recording.statuses()[-1][1]
    print("reference release milestones:", *enumerate(recording.milestones()), sep="\n  ")
    return Reference(
        history=[(version["stage"], version["id"]) for version in final["history"]],
        jobs=[name for kind, name in recording.jobs if kind == "ADDED"],
        progress=[position for _, position in recording.progress()],
        milestones=recording.milestones(),
    )


# --- The invariants -------------------------------------------------------------------------------


def check_invariants(recording: Recording, replicas: int = 4) -> None:
    assert not recording.errors, recording.errors
    assert recording.released(), "the release never reached Released"
    problems = replica_problems(recording, replicas) + promotion_problems(recording)
    assert not problems, "\n".join(problems)


def replica_problems(recording: Recording, total: int) -> list[str]:
    """What the operator promises of stable + canary (core/canary.py, docs/reference.md: the total
    never changes, never grows while replicas move back and forth): each pass writes one split that
    sums to serving.replicas, in two writes (one per Deployment). So, once both Deployments exist:
    - never more than serving.replicas at any moment;
    - a sum off serving.replicas only between the two writes of one pass: a run of consecutive off
      states holds at most one write of each operator process (a killed process may leave its pass
      half done; the next one's first pass completes it);
    - while Promoting, replicas move one way only (canary.handover): the stable never shrinks, the
      canary never grows;
    - serving.replicas, all on the stable track, at the end."""
    problems: list[str] = []
    both = [(version, process, state) for version, process, state in recording.scaling() if len(state) == 2]
    phases = [(version, status["phase"]) for version, status in recording.statuses()]
    for (version, _, state), (_, _, before) in zip(both, [both[0], *both[:-1]], strict=True):
        if sum(state.values()) > total:
            problems.append(f"rv {version}: {state} wants {sum(state.values())} pods, more than {total}")
        phase = next((p for v, p in reversed(phases) if v < version), None)
        if phase == "Promoting" and (state[STABLE] < before[STABLE] or state[CANARY] > before[CANARY]):
            problems.append(f"rv {version}: promoting went backwards, {before} -> {state}")
    run: list[tuple[int, int, dict[str, int]]] = []
    for entry in both:
        if sum(entry[2].values()) == total:
            run = []
            continue
        run.append(entry)
        processes = [process for _, process, _ in run]
        if len(set(processes)) < len(processes):
            problems.append(f"rv {run[0][0]}..{entry[0]}: off {total} for more than one pass: "
                            f"{[state for _, _, state in run]}")
    if not both or both[-1][2] != {STABLE: total, CANARY: 0}:
        problems.append(f"the release ended with {both[-1][2] if both else None}, not all {total} on {STABLE}")
    return problems


def promotion_problems(recording: Recording) -> list[str]:
    """No step ends and no promotion starts without a passing analysis run for that canary within that
    step (api/status.py: the run is recorded in status.analysis, written with the advance)."""
    problems: list[str] = []
    statuses = [status for _, status in recording.statuses()]
    for before, after in itertools.pairwise(statuses):
        if before["phase"] != "Progressing":
            continue
        moved = (after.get("stageIndex", 0), after.get("stepIndex", 0)) != (
            before.get("stageIndex", 0), before.get("stepIndex", 0))
        if not moved and after["phase"] != "Promoting":
            continue
        if after["phase"] not in ("Progressing", "Promoting", "Training"):
            continue  # a rollback or a pause is not an advance
        where = f"stage {before.get('stageIndex', 0)} step {before.get('stepIndex', 0)} -> {after['phase']} " \
                f"stage {after.get('stageIndex', 0)} step {after.get('stepIndex', 0)}"
        run = after.get("analysis") or {}
        checks = run.get("checks") or []
        canary = (before.get("canary") or {}).get("id")
        if not (run.get("lastRunPassed") and checks and all(c["verdict"] == "Pass" for c in checks)):
            problems.append(f"{where}: the last analysis run did not pass: {run}")
        elif run.get("version") != canary:
            problems.append(f"{where}: the passing run was for {run.get('version')}, the canary is {canary}")
        elif _at(run.get("lastRunAt")) < _at(before.get("stepStartedAt")):
            problems.append(f"{where}: the passing run ({run.get('lastRunAt')}) is older than the step "
                            f"({before.get('stepStartedAt')})")
    return problems


def _at(timestamp: str | None) -> datetime:
    return datetime.fromisoformat((timestamp or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


def check_against_reference(recording: Recording, reference: Reference) -> None:
    final = recording.statuses()[-1][1]
    assert [(v["stage"], v["id"]) for v in final["history"]] == reference.history
    added = [name for kind, name in recording.jobs if kind == "ADDED"]
    # One Job per stage attempt: the deterministic names of the uninterrupted run, each created once.
    assert sorted(added) == sorted(reference.jobs) and len(added) == len(set(added)), added
    assert not [name for kind, name in recording.jobs if kind == "DELETED"]
    assert [position for _, position in recording.progress()] == reference.progress


# --- The schedules --------------------------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn, reference: Reference) -> list[Kill]:
    """One to four kills at distinct milestones before Released, in order; no delay (right after the
    event, often between the two Deployment writes of one pass) comes up most."""
    last = len(reference.milestones) - 2  # the last milestone is Released itself
    points = sorted(draw(st.lists(st.integers(0, last), min_size=1, max_size=4, unique=True)))
    delays = st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.2, 0.5, 1.0, 2.0])
    signals: st.SearchStrategy[Signal] = st.sampled_from(["SIGKILL", "SIGKILL", "SIGTERM"])
    return [Kill(point, draw(delays), draw(signals), reference.milestones[point]) for point in points]


def test_killed_at_random_moments_the_release_ends_as_an_uninterrupted_one(
        reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> None:
    ran: list[list[str]] = []

    @settings(max_examples=SCHEDULES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate])  # no shrinking: each example is a whole release; the schedule is printed
    @given(st.data())
    def release_under(data: st.DataObject) -> None:
        schedule = data.draw(schedules(reference), label="schedule")
        directory = tmp_path_factory.mktemp("schedule")
        recording, done = run_release(directory, schedule)
        ran.append(done)
        note(f"kills done: {done}; restarts recorded at rv {recording.kills}")
        print(f"schedule {len(ran)}: {[str(k) for k in schedule]} -> {len(done)} kills done")
        check_invariants(recording)
        check_against_reference(recording, reference)

    release_under()
    kills = sum(len(done) for done in ran)
    print(f"{len(ran)} schedules, {kills} kills: {ran}")
    assert len(ran) == SCHEDULES and kills > 0
