"""Spec changes, pause, the one-shot actions and deletion, through the real operator process."""

from __future__ import annotations

import time

from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for


def test_spec_change_mid_release_restarts_from_stage_one(harness: Harness):
    spec = release_spec(harness.prometheus.url)
    spec["stages"][1]["steps"][1]["duration"] = "1h"
    harness.apply("digits", spec)
    wait_for(lambda: harness.status("digits").get("canaryWeight") == 50, "the grow canary at weight 50")
    stable = harness.status("digits")["stable"]
    first = {**spec["stages"][0], "training": {"data": "sklearn:digits?fraction=0.35"}}
    harness.patch_spec("digits", {"stages": [first, *spec["stages"][1:]]})
    status = wait_for(lambda: (s := harness.status("digits")).get("run") == 2 and s, "the second run")
    assert status["stable"]["id"] == stable["id"]
    harness.wait_events("SpecChanged")
    wait_for(lambda: harness.deployment("digits-canary").spec.replicas == 0, "the canary withdrawn")
    assert status["observedGeneration"] == harness.get("digits")["metadata"]["generation"]


def test_pause_holds_and_resume_continues(harness: Harness):
    spec = release_spec(harness.prometheus.url)
    harness.apply("digits", spec)
    wait_for(lambda: harness.status("digits").get("stageIndex") == 1
             and harness.status("digits").get("phase") == "Progressing", "the grow canary")
    harness.patch_spec("digits", {"paused": True})
    held = harness.wait_phase("digits", "Paused")
    jobs = harness.jobs()
    harness.prometheus.queries.clear()
    time.sleep(4)  # several analysis intervals and step durations pass while paused
    assert harness.status("digits")["stepIndex"] == held["stepIndex"] and harness.jobs() == jobs
    assert harness.prometheus.queries == []  # no analysis while paused
    harness.patch_spec("digits", {"paused": False})
    harness.wait_phase("digits", "Released")
    harness.wait_events("Paused", "Resumed")


def test_abort_rolls_back_and_reapplying_the_same_id_does_nothing(harness: Harness):
    spec = release_spec(harness.prometheus.url)
    spec["stages"][1]["steps"][0]["duration"] = "1h"
    harness.apply("digits", spec)
    harness.wait_phase("digits", "Progressing")
    harness.patch_spec("digits", {"actions": {"abort": "abort-1"}})
    status = harness.wait_phase("digits", "RolledBack")
    assert status["handledActions"]["abort"] == "abort-1" and status["failure"]["reason"] == "Aborted"
    harness.wait_events("ActionHandled", "Aborted")
    handled = harness.reasons().count("ActionHandled")
    harness.patch_spec("digits", {"actions": {"abort": "abort-1"}, "paused": False})
    wait_for(lambda: harness.get("digits")["status"]["observedGeneration"]
             == harness.get("digits")["metadata"]["generation"], "the re-apply seen")
    assert harness.reasons().count("ActionHandled") == handled


def test_promote_finishes_the_step_and_promote_full_releases(harness: Harness):
    spec = release_spec(harness.prometheus.url)
    for stage in spec["stages"][1:]:
        for step in stage["steps"]:
            step["duration"] = "1h"
    harness.apply("digits", spec)
    wait_for(lambda: harness.status("digits").get("canaryWeight") == 10
             and harness.status("digits").get("stageIndex") == 1, "the grow canary at 10")
    harness.patch_spec("digits", {"actions": {"promote": "p1"}})
    wait_for(lambda: harness.status("digits").get("canaryWeight") == 50, "promote to the next step")
    canary = harness.status("digits")["canary"]
    harness.patch_spec("digits", {"actions": {"promoteFull": "pf1"}})
    status = harness.wait_phase("digits", "Released")
    assert status["stable"]["id"] == canary["id"]
    assert harness.deployment("digits-stable").spec.replicas == 4


def test_retry_after_a_failed_job_trains_a_new_attempt(harness: Harness):
    from modelrelease_local.outcomes import JobOutcome

    harness.training.failures["grow"] = JobOutcome.failed(75, "transient")
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "RolledBack")
    del harness.training.failures["grow"]
    harness.patch_spec("digits", {"actions": {"retry": "r1"}})
    status = harness.wait_phase("digits", "Released")
    assert status["stages"][1]["attempt"] == 2
    assert len(harness.jobs()) == 4  # warmup, grow (failed), grow again, full


def test_undo_restores_an_earlier_version(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    status = harness.wait_phase("digits", "Released")
    first = status["history"][0]
    harness.patch_spec("digits", {"actions": {"undo": {"requestId": "u1", "toVersion": first["name"]}}})
    restored = wait_for(lambda: (s := harness.status("digits"))["stable"]["id"] == first["id"] and s,
                        "the earlier version restored")
    assert restored["history"][-1]["restored"] is True
    wait_for(lambda: {e.name: e.value for e in harness.deployment("digits-stable").spec.template.spec.containers[0].env}
             ["MODEL_VERSION"] == first["id"], "the stable Deployment serving it")


def test_deleting_a_release_runs_the_finalizer_and_collects_children(harness: Harness):
    harness.apply("digits", release_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Released")
    body = harness.get("digits")
    assert any(f.startswith("modelrelease.io/") for f in body["metadata"]["finalizers"])
    uid = body["metadata"]["uid"]
    for deployment in ("digits-stable", "digits-canary"):
        assert harness.deployment(deployment).metadata.owner_references[0].uid == uid
    assert all(j.metadata.owner_references[0].uid == uid for j in harness.batch.list_namespaced_job("default").items)
    harness.custom.delete_namespaced_custom_object("modelrelease.io", "v1alpha1", "default", "modelreleases", "digits")
    wait_for(lambda: not harness.custom.list_namespaced_custom_object(
        "modelrelease.io", "v1alpha1", "default", "modelreleases")["items"], "the release gone")
    wait_for(lambda: not harness.apps.list_namespaced_deployment("default").items, "its Deployments collected")
    wait_for(lambda: not harness.jobs(), "its Jobs collected")
