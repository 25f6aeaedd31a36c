"""Traffic routing through a real HTTPRoute in the embedded API, with the operator running for real.

The route is created over HTTP against the HTTPRoute CRD; the operator sets its weights, header rule
and mirror; the tests read the route back and the API's request log for the order of the writes.
"""

from __future__ import annotations

import time
from typing import Any

import kubernetes

from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
ROUTE_PATH = "/httproutes/digits-route"


def routed_spec(url: str) -> dict[str, Any]:
    spec = release_spec(url)
    spec["serving"] = {"replicas": 4, "trafficRouting": {"gatewayAPI": {"httpRoute": "digits-route"},
                                                        "scaleDownDelay": "1s"}}
    spec["stages"][1]["steps"] = [
        {"weight": 0, "duration": "1s", "mirror": {"percent": 20}},
        {"weight": 5, "duration": "2s", "canaryScale": {"replicas": 1},
         "headerRoute": {"name": "X-Canary", "value": "always"}},
        {"weight": 50, "duration": "1s"},
    ]
    return spec


def create_route(harness: Harness, name: str = "digits-route") -> None:
    harness.custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": ["digits.example.com"],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1/models"}}],
                            "backendRefs": [{"name": "digits-stable", "port": 8501}]}]},
    })


def route(harness: Harness, name: str = "digits-route") -> dict[str, Any]:
    found: dict[str, Any] = harness.custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
    return found


def weights(obj: dict[str, Any]) -> dict[str, int]:
    """The owned rule's backend weights, by Service."""
    rules = [r for r in obj["spec"]["rules"] if r.get("name") != "digits-canary-header"]
    return {ref["name"]: ref.get("weight", 1) for ref in rules[0]["backendRefs"]}


def has_header_rule(obj: dict[str, Any]) -> bool:
    return any(r.get("name") == "digits-canary-header" for r in obj["spec"]["rules"])


def mirror_percent(obj: dict[str, Any]) -> int | None:
    for rule in obj["spec"]["rules"]:
        for f in rule.get("filters") or []:
            if f.get("type") == "RequestMirror":
                return int(f["requestMirror"].get("percent", 100))
    return None


def _deployment_name(record: Any) -> str:
    """The Deployment a write is for: named in its path (PATCH), or in its body (POST)."""
    if record.method == "POST":
        return str(((record.body or {}).get("metadata") or {}).get("name", ""))
    return str(record.path.rsplit("/", 1)[-1])


def test_the_route_follows_each_step_and_goes_back_to_the_stable_before_the_canary_pods(harness: Harness):
    create_route(harness)
    harness.apply("digits", routed_spec(harness.prometheus.url))
    wait_for(lambda: weights(route(harness)).get("digits-canary") == 50, "the step to 50")
    # The steps' routes as the operator wrote them, in order, from the API's request log (a step of a
    # second or two is too short to be sure of catching it by polling the route).
    written = [r.body for r in harness.server.requests.writes()
               if r.method == "PUT" and r.path.endswith(ROUTE_PATH) and r.body]
    states = [(weights(w).get("digits-canary"), has_header_rule(w), mirror_percent(w)) for w in written]
    assert [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]] == [
        (0, False, 20), (5, True, None), (50, False, None)]
    at_five = next(w for w in written if weights(w).get("digits-canary") == 5)
    header_rule = next(r for r in at_five["spec"]["rules"] if r.get("name") == "digits-canary-header")
    assert header_rule["matches"][0]["headers"] == [{"type": "Exact", "name": "X-Canary", "value": "always"}]
    assert header_rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v1/models"}
    # 5% of the traffic on one canary pod; the stable keeps all four.
    replicas = [(_deployment_name(r), ((r.body or {}).get("spec") or {}).get("replicas"))
                for r in harness.server.requests.writes() if "/deployments" in r.path and r.method in ("POST", "PATCH")]
    assert ("digits-canary", 1) in replicas, replicas
    assert all(n == 4 for name, n in replicas if name == "digits-stable" and n is not None), replicas
    # The user's parts of the route are left alone.
    seen = route(harness)
    assert seen["spec"]["hostnames"] == ["digits.example.com"] and seen["spec"]["parentRefs"][0]["name"] == "public"

    harness.server.requests.reset()
    harness.prometheus.set("error_rate", canary=0.9, stable=0.0)
    harness.wait_phase("digits", "RolledBack")
    final = route(harness)
    assert weights(final) == {"digits-stable": 100, "digits-canary": 0} and not has_header_rule(final)
    writes = harness.server.requests.writes()
    route_off = next(i for i, r in enumerate(writes) if r.method == "PUT" and r.path.endswith(ROUTE_PATH)
                     and weights(r.body or {}).get("digits-canary") == 0)
    scaled_down = [i for i, r in enumerate(writes) if r.path.endswith("/deployments/digits-canary")
                   and ((r.body or {}).get("spec") or {}).get("replicas") == 0]
    assert scaled_down and route_off < min(scaled_down)


def test_an_operator_killed_after_an_abort_still_restores_the_route(harness: Harness):
    create_route(harness)
    harness.apply("digits", routed_spec(harness.prometheus.url))
    wait_for(lambda: weights(route(harness)).get("digits-canary") == 50, "the canary at 50")
    harness.rollout.hold = True  # nothing becomes ready: the rollback cannot finish on its own
    harness.patch_spec("digits", {"actions": {"abort": "a1"}})
    harness.restart_operator()  # SIGKILL, whatever it was doing, and a fresh process
    harness.rollout.hold = False
    for namespace, name in harness.rollout.holding():
        harness.rollout.release(namespace, name)
    harness.wait_phase("digits", "RolledBack")
    assert weights(route(harness)) == {"digits-stable": 100, "digits-canary": 0}


def test_deleting_the_release_gives_the_route_back_to_the_stable(harness: Harness):
    create_route(harness)
    harness.apply("digits", routed_spec(harness.prometheus.url))
    wait_for(lambda: weights(route(harness)).get("digits-canary", 0) > 0, "canary traffic")
    harness.custom.delete_namespaced_custom_object("modelrelease.io", "v1alpha1", "default", "modelreleases", "digits")

    def gone() -> bool:
        try:
            harness.get("digits")
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, "the release to be deleted")
    after = route(harness)
    assert weights(after).get("digits-canary", 0) == 0 and not has_header_rule(after) and mirror_percent(after) is None


def test_a_missing_route_is_a_condition_and_an_event_and_nothing_advances(harness: Harness):
    harness.apply("digits", routed_spec(harness.prometheus.url))
    wait_for(lambda: any(c["type"] == "RouteReady" and c["status"] == "False"
                         for c in harness.status("digits").get("conditions", [])), "RouteReady False")
    condition = next(c for c in harness.status("digits")["conditions"] if c["type"] == "RouteReady")
    assert "no HTTPRoute digits-route" in condition["message"] and condition["reason"] == "RouteInvalid"
    harness.wait_events("RouteInvalid")
    wait_for(lambda: harness.status("digits").get("canary") is not None, "a canary, held")
    position = (harness.status("digits").get("stageIndex"), harness.status("digits").get("stepIndex"))
    time.sleep(3)  # steps of 1-2 s would have ended by now
    assert (harness.status("digits").get("stageIndex"), harness.status("digits").get("stepIndex")) == position
    create_route(harness)
    harness.wait_phase("digits", "Released")
    assert weights(route(harness)) == {"digits-stable": 100, "digits-canary": 0}
