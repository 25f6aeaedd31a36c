"""
What the embedded API server takes from kmock, and the behaviours it keeps where kmock 0.8 falls short.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import warnings
from typing import Any

import kmock

from modelrelease_local import errors
from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.resources import ResourceRegistry


def _get(server: EmbeddedApiServer, path: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), json.loads(exc.read() or b"null")


def test_the_handler_is_a_kmock_kubernetes_scaffold(server: EmbeddedApiServer) -> None:
    assert isinstance(server.handler, kmock.KubernetesScaffold)
    status, _, root = _get(server, "/")
    assert status == 200
    # kmock's root document: its own endpoints, ours registered as its reactions, and every group-version.
    assert {"/api", "/api/v1", "/apis", "/version", "/healthz", "/openapi/v3", "/apis/apps/v1"} <= set(root["paths"])


def test_core_discovery_is_right_where_kmocks_is_not(server: EmbeddedApiServer) -> None:
    _, _, core = _get(server, "/api/v1")
    assert core["groupVersion"] == "v1"  # kmock 0.8 says "/v1"
    entries = {entry["name"]: entry for entry in core["resources"]}
    assert entries["pods/status"]["verbs"] == ["get", "patch", "update"]  # kmock: the parent's verbs
    assert entries["namespaces"]["namespaced"] is False
    _, _, apis = _get(server, "/apis")
    autoscaling = next(group for group in apis["groups"] if group["name"] == "autoscaling")
    assert autoscaling["preferredVersion"]["version"] == "v2"  # kmock: whichever version a set yields first
    _, _, versions = _get(server, "/api")
    assert versions["serverAddressByClientCIDRs"]  # required by the kubernetes client's V1APIVersions


def test_namespace_paths_that_kmocks_parser_cannot_read(server: EmbeddedApiServer) -> None:
    assert _get(server, "/api/v1/namespaces")[2]["kind"] == "NamespaceList"  # kmock 0.8: 500
    assert _get(server, "/api/v1/namespaces/default")[2]["metadata"]["name"] == "default"
    assert _get(server, "/api/v1/namespaces/default/status")[2]["kind"] == "Namespace"


def test_not_found_errors_are_kmocks_and_render_as_the_api_servers(server: EmbeddedApiServer) -> None:
    pods = server.resource("v1", "pods")
    assert isinstance(errors.not_found(pods, "x"), kmock.KubernetesObjectNotFoundError)
    assert isinstance(errors.resource_not_found(), kmock.KubernetesResourceNotFoundError)
    assert isinstance(errors.endpoint_not_found(), kmock.KubernetesEndpointNotFoundError)
    for path in ["/nothing/here", "/apis/nothing.example.com", "/api/v1/nothings", "/api/v1/namespaces/default/pods/x"]:
        status, content_type, body = _get(server, path)
        assert status == 404 and content_type.startswith("application/json")
        assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
        assert "traceback" not in json.dumps(body) and "kmock" not in body["message"]


def test_kmock_reactions_answer_urls_outside_the_resources(server: EmbeddedApiServer) -> None:
    server.handler["get /metrics"] << {"scraped": True}
    assert _get(server, "/metrics")[2] == {"scraped": True}
    assert _get(server, "/api/v1/namespaces/default")[0] == 200  # resource endpoints stay the store's


def test_watch_streams_are_rendered_by_kmock_as_json_lines(server: EmbeddedApiServer) -> None:
    path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1"
    server.call(server.store.create, server.resource("v1", "configmaps"), "default", {"metadata": {"name": "a"}})
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        events = [json.loads(line) for line in response.read().splitlines() if line]
    assert [(event["type"], event["object"]["metadata"]["name"]) for event in events] == [("ADDED", "a")]
    assert server.requests.count("GET", "/configmaps") == 1


def test_bundled_resources_come_from_kmocks_public_loader() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = ResourceRegistry()
    assert registry.get("apps", "v1", "deployments") is not None
    assert registry.get("metrics.k8s.io", "v1beta1", "pods") is None  # not part of a vanilla API server
