"""Routine analysis runs (passing, deciding nothing) are kept in memory between status writes."""

from __future__ import annotations

import copy
from datetime import timedelta

from modelrelease.adapters.prometheus import QueryResult
from modelrelease.api.status import ModelReleaseStatus
from modelrelease.core.analysis import ROUTINE_FLUSH, routine_run_only
from modelrelease.runtime.cache import Freshest
from modelrelease.runtime.reconcile import PassResult, reconcile_once
from tests.runtime.test_reconcile import NAME, NS, Release, analysed_spec


def long_steps() -> dict:  # type: ignore[type-arg]
    """Steps of ten minutes: many analysis runs per step, as in a real release."""
    spec = analysed_spec()
    for stage in spec["stages"]:
        for step in stage["steps"]:
            step["duration"] = "10m"
    return spec


def reconcile_deferring(release: Release, freshest: Freshest, now):  # type: ignore[no-untyped-def]
    """One pass as the operator's daemon runs it: from the freshest state, routine runs deferred."""
    obj, stored = freshest.pick(copy.deepcopy(release.obj))

    class View:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(release.cluster, name)

        def get_release(self, namespace: str, name: str):  # type: ignore[no-untyped-def]
            return obj

    result = reconcile_once(View(), release.providers, NS, NAME, now, release.emit,  # type: ignore[arg-type]
                            stored=stored, defer_routine_runs=True)
    freshest.remember(obj, result)
    return result


def test_passing_runs_within_a_minute_of_the_last_written_one_write_nothing() -> None:
    release = Release(long_steps())
    start = release.to_canary()
    freshest = Freshest()
    first = reconcile_deferring(release, freshest, start + timedelta(seconds=30))
    assert first.status_written  # the canary's first run is written (there is none stored to compare with)
    mark = release.cluster.mark()
    second = reconcile_deferring(release, freshest, start + timedelta(seconds=60))
    assert second.deferred and not second.status_written
    assert [c for c in release.cluster.since(mark) if c.is_write] == []
    assert release.status["analysis"]["runs"] == 1  # the API still holds the first run

    # The next pass plans from the run kept in memory: no second query within the interval.
    asked = len(release.providers.asked)
    idle = reconcile_deferring(release, freshest, start + timedelta(seconds=70))
    assert len(release.providers.asked) == asked and not idle.status_written and not idle.deferred

    # A minute after the last written run, the runs are written, with every count.
    third = reconcile_deferring(release, freshest, start + timedelta(seconds=90))
    assert third.status_written
    assert release.status["analysis"]["runs"] == 3 and release.status["analysis"]["successes"] == 3


def test_a_failing_run_is_written_at_once() -> None:
    release = Release(long_steps())
    start = release.to_canary()
    freshest = Freshest()
    reconcile_deferring(release, freshest, start + timedelta(seconds=30))
    release.providers.answer = lambda q: QueryResult.of(
        0.5 if q.startswith("error_rate") else 500 if q.startswith("requests") else 0.2)
    result = reconcile_deferring(release, freshest, start + timedelta(seconds=60))
    assert result.status_written and release.status["phase"] in ("RollingBack", "RolledBack")


def test_someone_elses_write_drops_what_was_kept_in_memory() -> None:
    release = Release(long_steps())
    start = release.to_canary()
    freshest = Freshest()
    reconcile_deferring(release, freshest, start + timedelta(seconds=30))
    assert reconcile_deferring(release, freshest, start + timedelta(seconds=60)).deferred
    release.cluster.update_spec("ModelRelease", NS, NAME, {**release.obj["spec"], "paused": False})
    obj, stored = freshest.pick(copy.deepcopy(release.obj))
    assert stored is None and obj["status"]["analysis"]["runs"] == 1


def test_routine_means_nothing_but_passing_runs_changed() -> None:
    written = ModelReleaseStatus.model_validate({
        "phase": "Progressing", "canaryWeight": 10,
        "analysis": {"version": "v2", "lastRunAt": "2026-11-01T12:00:00Z", "lastRunPassed": True, "runs": 1,
                     "successes": 1}})
    later = "2026-11-01T12:00:30Z"
    routine = written.model_copy(update={"analysis": written.analysis.model_copy(
        update={"last_run_at": later, "runs": 2, "successes": 2})})
    assert routine_run_only(written, routine)
    moved = routine.model_copy(update={"canary_weight": 50})
    assert not routine_run_only(written, moved)
    failed = routine.model_copy(update={"analysis": routine.analysis.model_copy(
        update={"last_run_passed": False, "failures": 1})})
    assert not routine_run_only(written, failed)
    streak_ended = written.model_copy(update={"analysis": written.analysis.model_copy(update={"inconclusive": 2})})
    assert not routine_run_only(streak_ended, routine)
    too_late = routine.model_copy(update={"analysis": routine.analysis.model_copy(update={
        "last_run_at": "2026-11-01T12:01:00Z"})})
    assert timedelta(seconds=60) == ROUTINE_FLUSH and not routine_run_only(written, too_late)


def test_pass_results_that_wrote_replace_the_cache_until_it_catches_up() -> None:
    freshest = Freshest()
    read = {"metadata": {"resourceVersion": "5"}, "status": {"phase": "Pending"}}
    written = {"metadata": {"resourceVersion": "6"}, "status": {"phase": "Training"}}
    freshest.remember(read, PassResult(None, True, written=written))
    assert freshest.pick(read) == (written, None)  # the cache still has 5
    caught_up = {"metadata": {"resourceVersion": "6"}, "status": {"phase": "Training"}}
    assert freshest.pick(caught_up) == (caught_up, None)
