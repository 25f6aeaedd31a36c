"""`kubectl modelrelease …` through the real kubectl, against the real operator."""

from __future__ import annotations

import subprocess
import time

from tests.operator.conftest import Harness
from tests.plugin.conftest import VENV_BIN, kubectl, plugin_json, waiting_spec
from tests.waiting import wait_for


def test_a_release_driven_from_the_plugin_end_to_end(harness: Harness) -> None:
    spec = waiting_spec(harness.prometheus.url)
    harness.apply("digits", spec)
    harness.wait_phase("digits", "Progressing")
    wait_for(lambda: harness.status("digits")["analysis"]["runs"] >= 1, "the canary's first analysis run")
    applied = harness.get("digits")["spec"]

    tree = kubectl(harness, "get", "digits")
    assert tree.returncode == 0, tree.stderr
    for text in ("default/digits", "Progressing", "Serving", "stable", "canary", "weight 10%", "Stages",
                 "warmup", "Succeeded", "gate accuracy >= 0.8", "grow", "step 1/2", "Analysis", "errors",
                 "latency", "Events", "CanaryStarted"):
        assert text in tree.stdout, (text, tree.stdout)

    promoted = kubectl(harness, "promote", "digits", "--wait")
    assert promoted.returncode == 0 and "promote of default/digits: handled" in promoted.stdout, promoted
    status = harness.status("digits")
    assert (status["stageIndex"], status["stepIndex"], status["canaryWeight"]) == (1, 1, 50)
    assert harness.get("digits")["spec"] == applied  # no drift against what Git applied

    aborted = kubectl(harness, "abort", "digits", "--wait")
    assert aborted.returncode == 0, aborted
    harness.wait_phase("digits", "RolledBack")
    ended = kubectl(harness, "status", "digits", "--timeout", "30s")
    assert ended.returncode == 1 and "RolledBack" in ended.stdout
    explained = kubectl(harness, "explain", "digits")
    assert "RolledBack because of Aborted" in explained.stdout and "retry" in explained.stdout

    retried = kubectl(harness, "retry", "digits", "--wait")
    assert retried.returncode == 0, retried
    harness.wait_phase("digits", "Progressing")

    watcher = subprocess.Popen(["kubectl", "modelrelease", "get", "digits", "-w"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_env(harness))
    time.sleep(1)  # let the watch begin; what it must show is asserted below, not how fast
    full = kubectl(harness, "promote", "digits", "--full", "--wait")
    assert full.returncode == 0, full
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err
    assert out.count("default/digits") >= 2 and "Promoting" in out and out.rstrip().count("Released") >= 1

    released = kubectl(harness, "status", "digits", "--timeout", "60s")
    assert released.returncode == 0 and "Released" in released.stdout
    history = plugin_json(harness, "history", "digits")
    assert [v["stage"] for v in history] == ["warmup", "grow"]
    table = kubectl(harness, "history", "digits").stdout
    assert "stable" in table and history[0]["name"] in table and "warmup" in table

    undone = kubectl(harness, "undo", "digits", "--to", history[0]["name"], "--wait")
    assert undone.returncode == 0, undone
    status = harness.status("digits")
    assert status["stable"]["name"] == history[0]["name"] and status["stable"]["restored"] is True
    assert harness.get("digits")["spec"] == applied

    requests = [(r["action"], r["source"], r["outcome"]) for r in status["handledRequests"]]
    assert requests == [("promote", "annotation", "Handled"), ("abort", "annotation", "Handled"),
                        ("retry", "annotation", "Handled"), ("promote_full", "annotation", "Handled"),
                        ("undo", "annotation", "Handled")]


def test_list_pause_resume_and_status_exit_codes(harness: Harness) -> None:
    harness.apply("digits", waiting_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")

    listing = kubectl(harness, "list")
    assert listing.returncode == 0 and "digits" in listing.stdout and "Progressing" in listing.stdout
    assert [i["metadata"]["name"] for i in plugin_json(harness, "list", "-A")["items"]] == ["digits"]

    assert kubectl(harness, "pause", "digits").returncode == 0
    harness.wait_phase("digits", "Paused")
    waiting = kubectl(harness, "status", "digits", "--timeout", "5s")
    assert waiting.returncode == 2 and "Paused" in waiting.stdout
    assert "Paused" in kubectl(harness, "explain", "digits").stdout

    assert kubectl(harness, "resume", "digits").returncode == 0
    harness.wait_phase("digits", "Progressing")
    timed_out = kubectl(harness, "status", "digits", "--timeout", "2s")
    assert timed_out.returncode == 2 and "timed out" in timed_out.stdout

    missing = kubectl(harness, "get", "nothing-here")
    assert missing.returncode == 1 and "not found" in missing.stderr
    ignored = kubectl(harness, "retry", "digits", "--wait")
    assert ignored.returncode == 1 and "ignored" in ignored.stdout


def _env(harness: Harness) -> dict[str, str]:
    import os

    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(harness.kubeconfig), "COLUMNS": "160"}


def test_a_bad_timeout_is_refused_with_the_fix(harness: Harness) -> None:
    harness.apply("digits", waiting_spec(harness.prometheus.url))
    done = kubectl(harness, "status", "digits", "--timeout", "soon")
    assert done.returncode == 1 and "--timeout" in done.stderr and "30s" in done.stderr
    assert wait_for(lambda: harness.status("digits").get("phase"), "the release to be picked up")
