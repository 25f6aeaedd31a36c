"""The HTTPRoute as the operator reads and writes it: owned rules, the state a route is in, the route set to a
state; and the written objects through the embedded API server, which holds them to the HTTPRoute CRD."""

from __future__ import annotations

import copy
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import kubernetes
import kubernetes_validate
import pytest

from modelrelease.adapters.kubernetes import Conflict, KubernetesCluster
from modelrelease.core.route_state import HeaderMatch, RouteState
from modelrelease.manifests.routing import (
    RouteProblem,
    confirm_written,
    in_sync,
    observed_state,
    owned_rules,
    route_with,
)
from modelrelease.manifests.serving import build_deployment, build_track_service
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.gateway_crd import build_httproute_crd
from tests.manifests.test_builders import OWNER, PARENT, _spec

RELEASE, PORT = "digits", 8080
STABLE, CANARY = "digits-stable", "digits-canary"
ADD_HEADER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-team", "value": "ml"}]}}
OTHER_MIRROR = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}


def route(*rules: dict[str, Any], namespace: str = "ml") -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "digits-route", "namespace": namespace},
            "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["digits.example"], "rules": list(rules)}}


def to_stable(**extra: Any) -> dict[str, Any]:
    return {"matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
            "backendRefs": [{"name": STABLE, "port": PORT}], **extra}


UNRELATED = {"name": "docs", "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [{"name": "docs", "port": 80}]}


def refs(rule: dict[str, Any]) -> list[tuple[str, int]]:
    return [(ref["name"], ref["weight"]) for ref in rule["backendRefs"]]


# The Services the route weighs.

@pytest.mark.parametrize("track", ["stable", "canary"])
def test_each_track_service_selects_only_that_track_pods(track: str):
    spec = _spec()
    service = build_track_service(spec, OWNER, track)
    kubernetes_validate.validate(service, "1.33", strict=True)
    assert service["metadata"]["name"] == f"digits-{track}" and service["metadata"]["namespace"] == "ml"
    assert service["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
    assert service["spec"]["ports"] == [{"name": "http", "port": spec.serving.port, "targetPort": spec.serving.port}]
    selector = service["spec"]["selector"].items()
    pods = {t: build_deployment(spec, OWNER, t, PARENT, 1)["spec"]["template"]["metadata"]["labels"].items()
            for t in ("stable", "canary")}
    assert selector <= pods[track] and not selector <= pods["canary" if track == "stable" else "stable"]


# Which rules are the operator's.

def test_owned_rules_are_those_referencing_the_release_services():
    found = route(UNRELATED, to_stable(), {"backendRefs": [{"name": CANARY, "port": PORT}]},
                  {"backendRefs": [{"name": STABLE, "port": PORT, "group": "", "kind": "Service", "namespace": "ml"}]})
    assert owned_rules(found, RELEASE, None) == [1, 2, 3]


@pytest.mark.parametrize("ref", [
    {"name": STABLE, "port": PORT, "namespace": "elsewhere"},
    {"name": STABLE, "port": PORT, "group": "example.com", "kind": "Backend"},
    {"name": STABLE, "port": PORT, "kind": "ServiceImport", "group": "multicluster.x-k8s.io"},
    {"name": "other-stable", "port": PORT},
])
def test_references_to_other_objects_are_not_the_release(ref: dict[str, Any]):
    with pytest.raises(RouteProblem, match=re.escape(
            "HTTPRoute ml/digits-route has no rule that sends traffic to Service digits-stable; add one, e.g. "
            "`rules: [{backendRefs: [{name: digits-stable, port: <serving port>}]}]`")):
        owned_rules(route(UNRELATED, {"backendRefs": [ref]}), RELEASE, None)


def test_a_named_rule_is_owned_whatever_it_references():
    found = route(to_stable(), dict(UNRELATED))
    assert owned_rules(found, RELEASE, "docs") == [1]
    with pytest.raises(RouteProblem, match="HTTPRoute ml/digits-route has no rule named 'predict' "
                                           "\\(named rules: docs\\); name the rule"):
        owned_rules(found, RELEASE, "predict")


def test_the_header_rule_is_never_owned():
    written = route_with(route(to_stable()), RELEASE, None, PORT, RouteState(10, HeaderMatch("x-canary", "1")))
    assert [r.get("name") for r in written["spec"]["rules"]] == ["digits-canary-header", None]
    assert owned_rules(written, RELEASE, None) == [1]
    with pytest.raises(RouteProblem, match="no rule named 'digits-canary-header'"):
        owned_rules(written, RELEASE, "digits-canary-header")


# Weights.

@pytest.mark.parametrize("weight", [5, 0, 100])
def test_the_canary_weight_is_exact_and_both_refs_stay(weight: int):
    original = route(UNRELATED, to_stable(filters=[ADD_HEADER]))
    written = route_with(original, RELEASE, None, PORT, RouteState(weight))
    rule = written["spec"]["rules"][1]
    assert refs(rule) == [(STABLE, 100 - weight), (CANARY, weight)]
    assert all(ref["port"] == PORT and ref["group"] == "" and ref["kind"] == "Service" for ref in rule["backendRefs"])
    # Nothing else changed: the other rule, the rule's matches and filters, the route's parents.
    assert written["spec"]["rules"][0] == UNRELATED and rule["filters"] == [ADD_HEADER]
    assert rule["matches"] == original["spec"]["rules"][1]["matches"]
    assert {k: v for k, v in written["spec"].items() if k != "rules"} == \
        {k: v for k, v in original["spec"].items() if k != "rules"}
    assert written["metadata"] == original["metadata"]
    assert original["spec"]["rules"][1]["backendRefs"] == [{"name": STABLE, "port": PORT}]  # a copy
    assert observed_state(written, RELEASE, None) == RouteState(weight)


def test_a_route_the_user_wrote_reads_as_its_share():
    assert observed_state(route(to_stable()), RELEASE, None) == RouteState.stable_only()
    # Weights of any scale: 1 of 3 is 33%; another backend's weight counts in the whole.
    rule = {"backendRefs": [{"name": STABLE, "port": PORT, "weight": 2}, {"name": CANARY, "port": PORT}]}
    assert observed_state(route(rule), RELEASE, None).canary_weight == 33
    rule = {"backendRefs": [{"name": STABLE, "port": PORT, "weight": 999_999}, {"name": CANARY, "port": PORT}]}
    assert observed_state(route(rule), RELEASE, None).canary_weight == 1  # a share, however small, is not none
    rule = {"backendRefs": [{"name": STABLE, "port": PORT, "weight": 0}, {"name": CANARY, "port": PORT, "weight": 0}]}
    assert observed_state(route(rule), RELEASE, None).canary_weight == 0


def test_owned_rules_that_disagree_read_as_the_largest_share_and_are_not_in_sync():
    half = route(to_stable(), {"backendRefs": [{"name": STABLE, "port": PORT, "weight": 70},
                                               {"name": CANARY, "port": PORT, "weight": 30}]})
    assert observed_state(half, RELEASE, None) == RouteState(30)
    assert not in_sync(half, RELEASE, None, PORT, RouteState(30))
    assert in_sync(route_with(half, RELEASE, None, PORT, RouteState(30)), RELEASE, None, PORT, RouteState(30))


# The mirror.

def test_mirror_added_updated_and_removed_other_filters_kept():
    original = route(to_stable(filters=[ADD_HEADER, OTHER_MIRROR]))
    mirrored = route_with(original, RELEASE, None, PORT, RouteState(10, mirror_percent=20))
    filters = mirrored["spec"]["rules"][0]["filters"]
    assert filters == [ADD_HEADER, OTHER_MIRROR, {"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": CANARY, "port": PORT}, "percent": 20}}]
    assert observed_state(mirrored, RELEASE, None) == RouteState(10, mirror_percent=20)

    updated = route_with(mirrored, RELEASE, None, PORT, RouteState(10, mirror_percent=100))
    assert [f.get("requestMirror", {}).get("percent") for f in updated["spec"]["rules"][0]["filters"]] == \
        [None, None, 100]
    removed = route_with(updated, RELEASE, None, PORT, RouteState(10))
    assert removed["spec"]["rules"][0]["filters"] == [ADD_HEADER, OTHER_MIRROR]
    assert observed_state(removed, RELEASE, None).mirror_percent is None
    # A rule without filters gets none added when there is no mirror.
    assert "filters" not in route_with(route(to_stable()), RELEASE, None, PORT, RouteState(10))["spec"]["rules"][0]


def test_a_mirror_someone_else_set_to_the_canary_reads_as_what_it_copies():
    by_fraction = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": CANARY, "port": PORT},
                                                              "fraction": {"numerator": 1, "denominator": 4}}}
    everything = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": CANARY, "port": PORT}}}
    assert observed_state(route(to_stable(filters=[by_fraction])), RELEASE, None).mirror_percent == 25
    assert observed_state(route(to_stable(filters=[everything])), RELEASE, None).mirror_percent == 100


@pytest.mark.parametrize("percent", [0, 101, -5])
def test_a_mirror_percent_outside_1_to_100_is_refused(percent: int):
    with pytest.raises(RouteProblem, match=f"mirror percent {percent} is outside 1..100; set the step's "
                                           f"mirror.percent between 1 and 100"):
        route_with(route(to_stable()), RELEASE, None, PORT, RouteState(10, mirror_percent=percent))


# The header rule.

def test_the_header_rule_copies_each_owned_rule_match_with_the_header_added():
    first = to_stable(matches=[{"path": {"type": "Exact", "value": "/a"},
                                "headers": [{"name": "X-Canary", "value": "user", "type": "Exact"},
                                            {"name": "x-tenant", "value": "t1"}]},
                               {"path": {"type": "PathPrefix", "value": "/b"}, "method": "POST"}])
    second = {"backendRefs": [{"name": STABLE, "port": PORT}]}  # no matches: every path
    header = HeaderMatch("x-canary", "^yes$", "RegularExpression")
    written = route_with(route(UNRELATED, first, second), RELEASE, None, PORT, RouteState(0, header))
    rules = written["spec"]["rules"]
    assert [r.get("name") for r in rules] == ["docs", "digits-canary-header", None, None]
    ours = {"type": "RegularExpression", "name": "x-canary", "value": "^yes$"}
    assert rules[1] == {"name": "digits-canary-header", "matches": [
        # The step's header replaces a user's match on the same (case-insensitive) header name.
        {"path": {"type": "Exact", "value": "/a"}, "headers": [{"type": "Exact", "name": "x-tenant", "value": "t1"},
                                                               ours]},
        {"path": {"type": "PathPrefix", "value": "/b"}, "method": "POST", "headers": [ours]},
        {"path": {"type": "PathPrefix", "value": "/"}, "headers": [ours]},
    ], "backendRefs": [{"group": "", "kind": "Service", "name": CANARY, "port": PORT, "weight": 100}]}
    assert observed_state(written, RELEASE, None) == RouteState(0, header)
    # Removed again, and the route is the one the weights alone make.
    removed = route_with(written, RELEASE, None, PORT, RouteState(0))
    assert removed == route_with(route(UNRELATED, first, second), RELEASE, None, PORT, RouteState(0))
    assert observed_state(removed, RELEASE, None).header is None


def test_the_header_rule_keeps_the_rule_filters_but_not_the_mirror():
    written = route_with(route(to_stable(filters=[ADD_HEADER], timeouts={"request": "10s"})), RELEASE, None, PORT,
                         RouteState(5, HeaderMatch("x-canary", "1"), mirror_percent=50))
    header_rule, owned = written["spec"]["rules"]
    assert header_rule["filters"] == [ADD_HEADER] and header_rule["timeouts"] == {"request": "10s"}
    assert [f["type"] for f in owned["filters"]] == ["RequestHeaderModifier", "RequestMirror"]


def test_owned_rules_with_different_filters_cannot_share_a_header_rule():
    with pytest.raises(RouteProblem, match=re.escape(
            "have different filters or timeouts, so one header rule cannot stand for them all; name one of them in "
            "spec.serving.trafficRouting.gatewayAPI.rule")):
        route_with(route(to_stable(filters=[ADD_HEADER]), to_stable()), RELEASE, None, PORT,
                   RouteState(5, HeaderMatch("x-canary", "1")))


def test_a_header_rule_changed_by_hand_never_reads_as_absent():
    written = route_with(route(to_stable()), RELEASE, None, PORT, RouteState(5, HeaderMatch("x-canary", "1")))
    edited = copy.deepcopy(written)
    edited["spec"]["rules"][0]["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]  # every request
    seen = observed_state(edited, RELEASE, None)
    assert seen.header is not None and seen.canary_reachable and seen != RouteState(5)
    assert route_with(edited, RELEASE, None, PORT, RouteState(5)) == route_with(written, RELEASE, None, PORT,
                                                                                RouteState(5))


def test_the_rule_limit_counts_the_header_rule():
    full = route(*[{**UNRELATED, "name": f"r{i}"} for i in range(15)], to_stable())
    assert len(route_with(full, RELEASE, None, PORT, RouteState(5))["spec"]["rules"]) == 16
    with pytest.raises(RouteProblem, match="HTTPRoute ml/digits-route would have 17 rules with the header route, "
                                           "more than the 16 Gateway API allows"):
        route_with(full, RELEASE, None, PORT, RouteState(5, HeaderMatch("x-canary", "1")))


def test_the_route_wide_match_limit_counts_the_header_rule():
    many = [{"path": {"type": "PathPrefix", "value": f"/m{i}"}} for i in range(64)]
    full = route(to_stable(matches=many[:40]), {**UNRELATED, "matches": many})
    with pytest.raises(RouteProblem, match="would have 144 matches with the header route, more than the 128"):
        route_with(full, RELEASE, None, PORT, RouteState(5, HeaderMatch("x-canary", "1")))


# Whole states: idempotent, and read back as written.

STATES = [RouteState.stable_only(), RouteState(5), RouteState(100), RouteState(25, mirror_percent=10),
          RouteState(0, HeaderMatch("x-canary", "always")),
          RouteState(50, HeaderMatch("x-user", "^beta-.*", "RegularExpression"), mirror_percent=100)]


@pytest.mark.parametrize("state", STATES, ids=str)
@pytest.mark.parametrize("rule", [None, "predict"])
def test_writing_a_state_twice_changes_nothing_and_reads_back_as_it(state: RouteState, rule: str | None):
    original = route(UNRELATED, to_stable(name="predict", filters=[ADD_HEADER]))
    once = route_with(original, RELEASE, rule, PORT, state)
    assert route_with(once, RELEASE, rule, PORT, state) == once
    assert observed_state(once, RELEASE, rule) == state and in_sync(once, RELEASE, rule, PORT, state)
    for other in STATES:  # from any state to this one, the same route
        assert route_with(route_with(original, RELEASE, rule, PORT, other), RELEASE, rule, PORT, state) == once


# Through the API server: the HTTPRoute CRD accepts what is written, and its defaults keep it in sync.

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[KubernetesCluster, kubernetes.client.CustomObjectsApi]]:
    """The operator's adapter and a plain client (the user's own writes), with the HTTPRoute CRD installed."""
    with EmbeddedApiServer() as server:
        kubeconfig = server.write_kubeconfig(pathlib.Path(tmp_path_factory.mktemp("kube")) / "kubeconfig")
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        with kubernetes.client.ApiClient(configuration) as api_client:
            kubernetes.client.ApiextensionsV1Api(api_client).create_custom_resource_definition(build_httproute_crd())
            yield KubernetesCluster(api_client), kubernetes.client.CustomObjectsApi(api_client)


def create(custom: kubernetes.client.CustomObjectsApi, obj: dict[str, Any]) -> dict[str, Any]:
    return custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", obj["metadata"]["namespace"],
                                                  "httproutes", obj)


def test_written_routes_pass_the_crd_and_stay_in_sync_as_read_back(cluster):
    api, custom = cluster
    user = route(UNRELATED, to_stable(filters=[ADD_HEADER]),
                 {"backendRefs": [{"name": STABLE, "port": PORT}], "filters": [ADD_HEADER]}, namespace="crd")
    read = create(custom, user)
    assert api.get_http_route("crd", "missing") is None
    for state in STATES:
        current = api.get_http_route("crd", "digits-route")
        assert current is not None
        desired = route_with(current, RELEASE, None, PORT, state)
        answer = api.replace_http_route("crd", "digits-route", desired)
        confirm_written(answer, RELEASE, None, state)
        # The server filled in its defaults (a path on every match, ...): the route still reads as in sync.
        stored = api.get_http_route("crd", "digits-route")
        assert stored is not None and observed_state(stored, RELEASE, None) == state
        assert in_sync(stored, RELEASE, None, PORT, state)
    assert read["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"]


def test_a_replace_from_a_stale_read_is_a_conflict(cluster):
    api, custom = cluster
    create(custom, route(to_stable(), namespace="stale"))
    read = api.get_http_route("stale", "digits-route")
    assert read is not None
    api.replace_http_route("stale", "digits-route", route_with(read, RELEASE, None, PORT, RouteState(5)))
    with pytest.raises(Conflict, match="HTTPRoute stale/digits-route changed since it was read"):
        api.replace_http_route("stale", "digits-route", route_with(read, RELEASE, None, PORT, RouteState(10)))
    with pytest.raises(ValueError, match=re.escape("replace it from a read, with metadata.resourceVersion")):
        api.replace_http_route("stale", "digits-route", route(to_stable(), namespace="stale"))


def test_a_crd_that_drops_the_rule_name_or_the_percent_is_told_apart():
    state = RouteState(10, HeaderMatch("x-canary", "1"), mirror_percent=20)
    written = route_with(route(to_stable()), RELEASE, None, PORT, state)
    pruned = copy.deepcopy(written)  # as an older standard-channel CRD stores it
    del pruned["spec"]["rules"][0]["name"]
    del pruned["spec"]["rules"][1]["filters"][0]["requestMirror"]["percent"]
    with pytest.raises(RouteProblem, match=r"did not keep what the operator wrote: rules\[\]\.name .*v1\.4.*; "
                                           r"RequestMirror percent .*v1\.3.*Install the Gateway API CRDs v1\.4"):
        confirm_written(pruned, RELEASE, None, state)
    confirm_written(written, RELEASE, None, state)
