"""The Argo CD health check and resource actions, executed as Lua on statuses the real operator wrote,
and each action's patch applied through the API: the operator acts on it exactly once."""

from __future__ import annotations

from typing import Any

import yaml

from modelrelease.argocd import ACTIONS, action_script, argocd_cm, discovery_script, health_script
from modelrelease.cli import main as modelrelease_main
from tests.operator.conftest import GROUP, PLURAL, VERSION, Harness
from tests.plugin.conftest import waiting_spec
from tests.plugin.lua import action_patch, run
from tests.waiting import wait_for


def health(obj: dict[str, Any]) -> tuple[str, str]:
    result = run(health_script(), obj)
    return result["status"], result.get("message", "")


def enabled(obj: dict[str, Any]) -> set[str]:
    return {name for name, state in run(discovery_script(), obj).items() if not state["disabled"]}


def act(h: Harness, name: str, action: str) -> dict[str, Any]:
    patch = action_patch(action_script(action), h.get(name))
    assert set(patch) == {"metadata"}, patch  # only annotations: nothing Git holds changes
    h.custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name, patch)
    return patch


def handled(h: Harness, name: str) -> list[tuple[str, str, str]]:
    return [(r["action"], r["source"], r["outcome"]) for r in h.status(name).get("handledRequests", [])]


def test_health_follows_the_release_through_its_phases(harness: Harness) -> None:
    harness.apply("digits", waiting_spec(harness.prometheus.url))
    assert health({"metadata": {"name": "digits", "generation": 1}}) == (
        "Progressing", "Waiting for the operator to pick up the release")
    harness.wait_phase("digits", "Training")
    assert health(harness.get("digits"))[0] == "Progressing"
    harness.wait_phase("digits", "Progressing")
    obj = harness.get("digits")
    assert health(obj)[0] == "Progressing"
    assert enabled(obj) == {"promote", "promote-full", "abort", "pause"}

    act(harness, "digits", "pause")
    obj = harness.wait_phase("digits", "Paused") and harness.get("digits")
    assert health(obj) == ("Suspended", "paused by the annotation modelrelease.io/paused")
    assert enabled(obj) == {"promote", "promote-full", "abort", "resume"}
    act(harness, "digits", "resume")
    harness.wait_phase("digits", "Progressing")

    act(harness, "digits", "abort")
    harness.wait_phase("digits", "RolledBack")
    status, message = health(harness.get("digits"))
    assert status == "Degraded" and message.startswith("Aborted: aborted by request")
    assert enabled(harness.get("digits")) == {"retry"}

    act(harness, "digits", "retry")
    harness.wait_phase("digits", "Progressing")
    act(harness, "digits", "promote-full")
    harness.wait_phase("digits", "Released")
    released = harness.get("digits")
    assert health(released) == ("Healthy", f"{released['status']['stable']['name']} is stable")

    # A spec the operator has not seen yet is not Healthy, even while the phase still says Released.
    stale = {**released, "metadata": {**released["metadata"], "generation": released["metadata"]["generation"] + 1}}
    assert health(stale)[0] == "Progressing"

    # A rule only the operator checks (the API's CEL rules refuse most bad specs before it sees them).
    harness.patch_spec("digits", {"analysis": {"interval": "500ms"}})
    invalid = harness.wait_phase("digits", "Invalid") and harness.get("digits")
    status, message = health(invalid)
    assert status == "Degraded" and "interval must be at least 1s" in message


def test_each_action_fires_exactly_once_and_leaves_the_spec_alone(harness: Harness) -> None:
    harness.apply("digits", waiting_spec(harness.prometheus.url))
    harness.wait_phase("digits", "Progressing")
    applied = harness.get("digits")["spec"]

    patch = act(harness, "digits", "promote")
    wait_for(lambda: handled(harness, "digits") == [("promote", "annotation", "Handled")], "promote handled")
    assert harness.status("digits")["stepIndex"] == 1
    # The same patch again (Argo CD retried, or self-heal re-applied the object): nothing more happens.
    harness.custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "digits", patch)
    harness.patch_spec("digits", {"paused": False})  # a spec write wakes the operator for another pass
    wait_for(lambda: harness.status("digits").get("observedGeneration") == harness.get("digits")["metadata"][
        "generation"], "the operator to see the new generation")
    assert handled(harness, "digits") == [("promote", "annotation", "Handled")]
    assert harness.status("digits")["stepIndex"] == 1
    harness.wait_events("ActionHandled")
    assert harness.reasons().count("ActionHandled") == 1
    assert {k: v for k, v in harness.get("digits")["spec"].items() if k != "paused"} == \
        {k: v for k, v in applied.items() if k != "paused"}


def test_the_argocd_cm_snippet_carries_the_tested_scripts(capsys: Any) -> None:
    assert modelrelease_main(["argocd-cm"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == argocd_cm()
    data = printed["data"]
    assert data["resource.customizations.health.modelrelease.io_ModelRelease"] == health_script()
    actions = yaml.safe_load(data["resource.customizations.actions.modelrelease.io_ModelRelease"])
    assert [d["name"] for d in actions["definitions"]] == list(ACTIONS)
    assert actions["discovery.lua"] == discovery_script()
