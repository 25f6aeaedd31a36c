"""
Watch and list semantics of the embedded API server against kube-apiserver 1.32's: the bounded watch
history and its 410 Expired, LIST pages with limit/continue, field labels per resource, and the
update and deletion rules of metadata.resourceVersion and metadata.generation.
"""
import base64
import functools
import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner

from modelrelease_local.apiserver import EmbeddedApiServer
from tests.local.conftest import WIDGETS_CRD
from tests.waiting import wait_for

RELIST_OPERATOR = pathlib.Path(__file__).with_name("kopf_relist_operator.py")


@pytest.fixture
def small_history(tmp_path: pathlib.Path) -> Iterator[tuple[EmbeddedApiServer, kubernetes.client.ApiClient]]:
    """A server whose watch history keeps 4 events per resource type."""
    with EmbeddedApiServer(event_log_size=4) as server:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(server.write_kubeconfig(tmp_path / "kubeconfig")),
                                           client_configuration=configuration)
        with kubernetes.client.ApiClient(configuration) as client:
            yield server, client


def _configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"a": "1"}}


def test_a_watch_older_than_the_history_gets_410_and_a_relist_sees_everything(
        small_history: tuple[EmbeddedApiServer, kubernetes.client.ApiClient]) -> None:
    """https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes: a watch from a
    resourceVersion the server no longer remembers gets "410 Gone" (an ERROR event with reason Expired); the client
    then lists again and watches from the list's resourceVersion."""
    _, client = small_history
    core = kubernetes.client.CoreV1Api(client)
    start = core.list_namespaced_config_map("default").metadata.resource_version
    created = [core.create_namespaced_config_map("default", _configmap(f"c{index}")) for index in range(8)]
    oldest_kept = int(created[-4].metadata.resource_version)

    with pytest.raises(kubernetes.client.ApiException) as gone:
        for _ in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, "default",
                                                 resource_version=start, timeout_seconds=5):
            pass
    assert gone.value.status == 410
    assert gone.value.reason == f"Expired: too old resource version: {start} ({oldest_kept - 1})"

    listing = core.list_namespaced_config_map("default")
    assert [item.metadata.name for item in listing.items] == [f"c{index}" for index in range(8)]
    core.create_namespaced_config_map("default", _configmap("after"))
    seen = [(event["type"], event["object"].metadata.name) for event in kubernetes.watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=listing.metadata.resource_version,
        timeout_seconds=1)]
    assert seen == [("ADDED", "after")]


def test_the_history_is_kept_per_resource_type(
        small_history: tuple[EmbeddedApiServer, kubernetes.client.ApiClient]) -> None:
    """As the API server's watch cache (one per resource type), busy Secrets do not expire a quiet ConfigMap
    watch's resourceVersion."""
    _, client = small_history
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_config_map("default", _configmap("quiet"))
    since = core.list_namespaced_config_map("default").metadata.resource_version
    for index in range(10):
        core.create_namespaced_secret("default", {"metadata": {"name": f"s{index}"}})
    core.create_namespaced_config_map("default", _configmap("late"))
    seen = [event["object"].metadata.name for event in kubernetes.watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=1)]
    assert seen == ["late"]


@pytest.fixture
def own_registry() -> Iterator[kopf.OperatorRegistry]:
    previous = kopf.get_default_registry()
    try:
        yield kopf.OperatorRegistry()
    finally:
        kopf.set_default_registry(previous)


def _resize_while_disconnected(server: EmbeddedApiServer, sizes: range) -> None:
    """End every watch-stream and, before any client can reconnect, change a widget more often than the history
    keeps (one synchronous step of the server's loop)."""
    server.store.events.close_all()
    widgets = server.resource("example.com/v1", "widgets")
    for size in sizes:
        server.store.patch(widgets, "default", "w", "application/merge-patch+json", {"spec": {"size": size}})


def test_kopf_relists_after_410(small_history: tuple[EmbeddedApiServer, kubernetes.client.ApiClient],
                                own_registry: kopf.OperatorRegistry, monkeypatch: pytest.MonkeyPatch,
                                tmp_path: pathlib.Path) -> None:
    """kopf, resuming its watch from a resourceVersion older than the history, gets 410 Expired, lists again
    and handles the object's latest state (the relist path of every operator built on it)."""
    server, client = small_history
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(WIDGETS_CRD)
    custom = kubernetes.client.CustomObjectsApi(client)
    monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kopf-kubeconfig")))

    def seen() -> Any:
        widget = custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
        return (widget.get("status") or {}).get("seen")

    with KopfRunner(["run", "--standalone", "-A", str(RELIST_OPERATOR)], timeout=60, registry=own_registry):
        custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}})
        wait_for(lambda: seen() == 1, message="kopf to handle the new widget")
        earlier = len(server.requests.filter("GET", path_suffix="/widgets"))
        before_flood = int(server.store.resource_version)
        server.call(functools.partial(_resize_while_disconnected, server, range(2, 12)))
        wait_for(lambda: seen() == 11, message="kopf to handle the widget's latest size after relisting")
        later = server.requests.filter("GET", path_suffix="/widgets")[earlier:]
    # kopf resumed from a resourceVersion the history had dropped (so it got 410), then listed again.
    assert any(r.query.get("watch") and 0 < int(r.query.get("resourceVersion") or 0) <= before_flood for r in later)
    assert any("watch" not in r.query for r in later)


def _page(server: EmbeddedApiServer, query: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"{server.url}/api/v1/namespaces/default/configmaps?{query}",
                                    timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_list_pages_are_consistent_with_the_first(server: EmbeddedApiServer,
                                                  core: kubernetes.client.CoreV1Api) -> None:
    """https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks: pages
    of at most `limit` items, a `continue` token while more remain, remainingItemCount, and every page shows the
    collection as of the first page's resourceVersion."""
    for index in range(7):
        core.create_namespaced_config_map("default", _configmap(f"c{index}"))
    first = core.list_namespaced_config_map("default", limit=3)
    assert [item.metadata.name for item in first.items] == ["c0", "c1", "c2"]
    assert first.metadata.remaining_item_count == 4 and first.metadata._continue

    core.delete_namespaced_config_map("c4", "default")
    core.create_namespaced_config_map("default", _configmap("c9"))
    core.patch_namespaced_config_map("c3", "default", {"data": {"a": "changed"}})
    second = core.list_namespaced_config_map("default", limit=3, _continue=first.metadata._continue)
    assert [item.metadata.name for item in second.items] == ["c3", "c4", "c5"]
    assert second.items[0].data == {"a": "1"}
    assert second.metadata.resource_version == first.metadata.resource_version
    assert second.metadata.remaining_item_count == 1
    last = core.list_namespaced_config_map("default", limit=3, _continue=second.metadata._continue)
    assert [item.metadata.name for item in last.items] == ["c6"]
    assert last.metadata._continue is None and last.metadata.remaining_item_count is None

    everything = core.list_namespaced_config_map("default")
    assert "c9" in [item.metadata.name for item in everything.items] and everything.metadata._continue is None


def test_selected_pages_have_no_remaining_count(server: EmbeddedApiServer, core: kubernetes.client.CoreV1Api) -> None:
    """remainingItemCount "is unknown" with a label or field selector: it is left unset."""
    for index in range(5):
        core.create_namespaced_config_map("default", _configmap(f"c{index}", tier="a" if index % 2 else "b"))
    page = core.list_namespaced_config_map("default", limit=1, label_selector="tier=b")
    assert [item.metadata.name for item in page.items] == ["c0"]
    assert page.metadata._continue and page.metadata.remaining_item_count is None
    rest = core.list_namespaced_config_map("default", limit=5, label_selector="tier=b",
                                           _continue=page.metadata._continue)
    assert [item.metadata.name for item in rest.items] == ["c2", "c4"]


def test_an_expired_or_forged_continue_token_is_refused(server: EmbeddedApiServer,
                                                        core: kubernetes.client.CoreV1Api) -> None:
    """A continue token whose snapshot is compacted gets 410 Expired ("The provided continue parameter is too
    old…"); one that is not a token at all is a bad request."""
    for index in range(3):
        core.create_namespaced_config_map("default", _configmap(f"c{index}"))
    server.handler.pages.lifetime = 0.0  # every snapshot is already older than the server keeps them
    token = core.list_namespaced_config_map("default", limit=1).metadata._continue
    status, body = _page(server, f"limit=1&continue={token}")
    assert (status, body["reason"]) == (410, "Expired")
    assert body["message"].startswith("The provided continue parameter is too old to display a consistent list")

    forged = base64.urlsafe_b64encode(b'{"v": "meta.k8s.io/v1"}').decode()
    status, body = _page(server, f"limit=1&continue={forged}")
    assert (status, body["reason"]) == (400, "BadRequest") and "continue key is not valid" in body["message"]


def test_kubectl_pages_through_a_long_list(server: EmbeddedApiServer, core: kubernetes.client.CoreV1Api,
                                          kubeconfig: pathlib.Path) -> None:
    """`kubectl get` lists in chunks (--chunk-size, 500 by default) and follows the continue tokens."""
    for index in range(5):
        core.create_namespaced_config_map("default", _configmap(f"c{index}"))
    result = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "configmaps", "--chunk-size=2",
                             "-o", "name"], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == [f"configmap/c{index}" for index in range(5)]
    limits = [r.query.get("limit") for r in server.requests.filter("GET", path_suffix="/configmaps")]
    assert limits.count("2") == 3


def test_unsupported_field_labels_are_refused(server: EmbeddedApiServer, core: kubernetes.client.CoreV1Api,
                                              batch: kubernetes.client.BatchV1Api) -> None:
    """https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/: "Supported field selectors
    vary by Kubernetes resource type" and an unsupported one is an error, not an empty match."""
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.list_namespaced_pod("default", field_selector="spec.foo=bar")
    assert refused.value.status == 400
    assert json.loads(refused.value.body)["message"] == "field label not supported: spec.foo"
    with pytest.raises(kubernetes.client.ApiException):
        core.list_namespaced_config_map("default", field_selector="data.a=1")

    # What kubectl, kopf and the operator's plugin send is accepted.
    core.list_namespaced_pod("default", field_selector="status.phase=Running,spec.nodeName=n,metadata.name=p")
    core.list_namespaced_event("default", field_selector="involvedObject.kind=ModelRelease,involvedObject.name=r,"
                                                         "involvedObject.uid=u,reason=Created,type=Normal")
    core.list_namespaced_secret("default", field_selector="type=Opaque")
    core.list_namespace(field_selector="status.phase=Active")
    assert [job.metadata.name for job in batch.list_namespaced_job("default",
                                                                   field_selector="status.successful=0").items] == []


def test_custom_resources_select_on_their_selectable_fields(api_client: kubernetes.client.ApiClient,
                                                            custom: kubernetes.client.CustomObjectsApi) -> None:
    """https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#crd-selectable-fields:
    a CRD version's selectableFields become field labels; others are refused."""
    crd = json.loads(json.dumps(WIDGETS_CRD))
    crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.color"}]
    kubernetes.client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)
    for name, color in (("red-one", "red"), ("blue-one", "blue")):
        wait_for(lambda name=name, color=color: custom.create_namespaced_custom_object(
            "example.com", "v1", "default", "widgets",
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"color": color}}),
            message="the widgets resource to be served")
    listing = custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets",
                                                   field_selector="spec.color=red")
    assert [item["metadata"]["name"] for item in listing["items"]] == ["red-one"]
    with pytest.raises(kubernetes.client.ApiException) as refused:
        custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets", field_selector="spec.size=1")
    assert refused.value.status == 400


def test_custom_resources_need_a_resource_version_to_be_replaced(
        custom: kubernetes.client.CustomObjectsApi, core: kubernetes.client.CoreV1Api, widgets_crd: Any) -> None:
    """Custom resources do not allow unconditional updates: a PUT without metadata.resourceVersion is invalid;
    built-in kinds such as ConfigMaps still allow it."""
    custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}})
    with pytest.raises(kubernetes.client.ApiException) as invalid:
        custom.replace_namespaced_custom_object("example.com", "v1", "default", "widgets", "w", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}})
    assert invalid.value.status == 422
    assert json.loads(invalid.value.body)["message"] == (
        'Widget.example.com "w" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for'
        ' an update')

    core.create_namespaced_config_map("default", _configmap("plain"))
    replaced = core.replace_namespaced_config_map("plain", "default", {"metadata": {"name": "plain"},
                                                                       "data": {"a": "2"}})
    assert replaced.data == {"a": "2"}


def test_deletion_with_finalizers_bumps_the_generation(custom: kubernetes.client.CustomObjectsApi,
                                                       widgets_crd: Any) -> None:
    """Setting deletionTimestamp is a change the object's controllers must act on: the API server bumps
    metadata.generation with it (markAsDeleting)."""
    created = custom.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "finalizers": ["example.com/hold"]}, "spec": {"size": 1}})
    custom.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
    deleting = custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "w")
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == created["metadata"]["generation"] + 1
