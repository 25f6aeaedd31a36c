"""kubectl against the embedded API: apply, printer columns, describe and merge patches of a ModelRelease."""

from __future__ import annotations

import subprocess

import yaml

from tests.operator.conftest import Harness, release_spec


def kubectl(harness: Harness, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", "--kubeconfig", str(harness.kubeconfig), *args], input=stdin,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubectl_apply_get_describe_and_patch(harness: Harness):
    manifest = {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
                "metadata": {"name": "digits", "namespace": "default"},
                "spec": release_spec(harness.prometheus.url)}
    assert "modelrelease.io/digits created" in kubectl(harness, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    harness.wait_phase("digits", "Released")

    table = kubectl(harness, "get", "mrel").splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STAGE", "WEIGHT", "STABLE", "CANARY", "AGE"]
    row = table[1].split()
    stable = harness.status("digits")["stable"]["name"]
    assert row[:5] == ["digits", "Released", "full", "0", stable]

    harness.wait_events("StepAdvanced")
    described = kubectl(harness, "describe", "mrel", "digits")
    assert "Released" in described and "StepAdvanced" in described

    patched = kubectl(harness, "patch", "mrel", "digits", "--type=merge",
                      "-p", '{"spec":{"actions":{"abort":"from-kubectl"}}}')
    assert "patched" in patched
    assert harness.get("digits")["spec"]["actions"]["abort"] == "from-kubectl"

    manifest["spec"]["paused"] = True
    assert "configured" in kubectl(harness, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert harness.get("digits")["spec"]["paused"] is True
