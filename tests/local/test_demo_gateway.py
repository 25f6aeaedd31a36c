"""The gateway demo's input: examples/digits-gateway.yaml (a ModelRelease and the HTTPRoute it routes by), how
the demo reads a file of several documents and creates its routes over HTTP, and its command line."""
import pathlib
import random
from typing import Any

import kubernetes
import pytest
import yaml
from rich.console import Console

import modelrelease_local.demo as demo
from modelrelease.api import parse_spec
from modelrelease_local.__main__ import build_parser, main
from modelrelease_local.demo import DemoInputError, DemoManifests, DemoResult, create_routes, load_manifests
from modelrelease_local.gateway_crd import GROUP, HTTPROUTE_PLURAL, VERSION, build_httproute_crd
from modelrelease_local.router import Router
from modelrelease_local.runner import EndpointKey
from modelrelease_local.traffic import TrafficStats
from modelrelease_local.view import _traffic, render, route_failures_text, route_text

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / 'examples' / 'digits-gateway.yaml'
STABLE = EndpointKey('default', 'digits', 'stable', 'sha256:aa', 'digits')
CANARY = EndpointKey('default', 'digits', 'canary', 'sha256:bb', 'digits')


@pytest.fixture
def routes_api(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    crd = build_httproute_crd()
    kubernetes.client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)  # type: ignore[arg-type]
    return kubernetes.client.CustomObjectsApi(api_client)


def write(path: pathlib.Path, *documents: Any) -> pathlib.Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_the_example_is_a_routed_release_with_exact_small_steps_and_its_route() -> None:
    manifests = load_manifests(EXAMPLE)
    spec = parse_spec(manifests.release['spec'])
    assert spec.serving.replicas == 10
    assert spec.serving.traffic_routing is not None and spec.serving.traffic_routing.gateway_api.http_route == 'digits'
    shadow, small, half = next(stage for stage in spec.stages if stage.name == 'grow').steps
    assert (shadow.weight, shadow.mirror and shadow.mirror.percent) == (0, 25)
    assert small.weight == 5 and small.canary_scale is not None and small.canary_scale.pods(10, 5) == 1
    assert small.header_route is not None and (small.header_route.name, small.header_route.value) == ('X-Canary',
                                                                                                       'always')
    assert half.weight == 50
    [route] = manifests.routes
    assert route['metadata']['name'] == 'digits'
    [rule] = route['spec']['rules']
    assert rule['backendRefs'] == [{'name': 'digits-stable', 'port': spec.serving.port}]


def test_the_example_route_is_accepted_and_sends_the_demos_requests_to_the_stable(
        routes_api: kubernetes.client.CustomObjectsApi, api_client: kubernetes.client.ApiClient) -> None:
    [created] = create_routes(api_client, load_manifests(EXAMPLE).routes)
    stored: dict[str, Any] = routes_api.get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, 'default', HTTPROUTE_PLURAL, 'digits')
    assert stored['metadata']['uid'] == created['metadata']['uid']
    # Defaulted as a cluster would: the Gateway kind and the backendRef's weight.
    assert stored['spec']['parentRefs'][0]['kind'] == 'Gateway'
    assert stored['spec']['rules'][0]['backendRefs'][0]['weight'] == 1
    # The path the traffic generator posts to matches the route: nothing is answered 404 by the route.
    router = Router(stored, {STABLE: [1001, 1002], CANARY: [2001]})
    rng = random.Random(1)
    decisions = [router.route({}, rng, path='/v1/models/digits:predict') for _ in range(200)]
    assert all(d.answer_from is not None and d.answer_from.key == STABLE for d in decisions)


def test_a_route_the_api_refuses_is_named_with_the_apis_reason(
        routes_api: kubernetes.client.CustomObjectsApi, api_client: kubernetes.client.ApiClient) -> None:
    route = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'HTTPRoute', 'metadata': {'name': 'digits'},
             'spec': {'rules': [{'backendRefs': [{'name': 'digits-stable', 'port': 0}]}]}}
    with pytest.raises(DemoInputError, match=r'HTTPRoute default/digits: the API refused it \(422\).*port'):
        create_routes(api_client, [route], 'default')


def test_a_file_of_one_release_still_reads_as_before() -> None:
    manifests = load_manifests(EXAMPLE.with_name('digits-demo.yaml'))
    assert manifests.routes == () and manifests.release['kind'] == 'ModelRelease'
    assert demo.load_release(EXAMPLE) == load_manifests(EXAMPLE).release


def test_files_the_demo_cannot_run_are_refused_naming_the_document_and_the_fix(tmp_path: pathlib.Path) -> None:
    release = load_manifests(EXAMPLE).release
    [route] = load_manifests(EXAMPLE).routes
    service = {'apiVersion': 'v1', 'kind': 'Service', 'metadata': {'name': 'digits'}}
    with pytest.raises(DemoInputError, match=r'document 2 is a v1 Service: .*remove it or apply it with kubectl'):
        load_manifests(write(tmp_path / 'service.yaml', route, service, release))
    with pytest.raises(DemoInputError, match='holds 2 ModelReleases; the demo runs exactly one'):
        load_manifests(write(tmp_path / 'two.yaml', route, release, release))
    with pytest.raises(DemoInputError, match='names HTTPRoute digits, which the file does not hold: add it'):
        load_manifests(write(tmp_path / 'no-route.yaml', release))
    with pytest.raises(DemoInputError, match='document 1 is not an object'):
        load_manifests(write(tmp_path / 'list.yaml', ['x'], release))


def test_the_demo_command_creates_the_files_routes_and_sends_the_tester_share(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    seen: dict[str, Any] = {}

    def fake_run_demo(manifest: dict[str, Any], **options: Any) -> DemoResult:
        seen.update(options, manifest=manifest)
        return DemoResult('Released', 'Released', manifest, {}, 1.0)

    monkeypatch.setattr(demo, 'run_demo', fake_run_demo)
    code = main(['--state-dir', str(tmp_path), 'demo', '--release', str(EXAMPLE), '--tester-share', '0.05'])
    assert code == 0
    assert seen['settings'].tester_share == 0.05
    assert seen['manifest']['kind'] == 'ModelRelease'
    assert [r['metadata']['name'] for r in seen['routes']] == ['digits']


def test_the_tester_share_is_a_share_and_a_bad_release_file_exits_before_anything_starts(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(['demo']).tester_share == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(['demo', '--tester-share', '1.5'])
    assert '--tester-share: 1.5 is outside 0 to 1' in capsys.readouterr().err

    def must_not_run(*_: Any, **__: Any) -> DemoManifests:
        raise AssertionError('the demo started on a file it cannot run')

    monkeypatch.setattr(demo, 'run_demo', must_not_run)
    release = load_manifests(EXAMPLE).release
    monkeypatch.setattr('modelrelease_local.__main__.Console', lambda: Console(width=400))
    code = main(['--state-dir', str(tmp_path), 'demo', '--release', str(write(tmp_path / 'r.yaml', release))])
    assert code == 2
    assert 'which the file does not hold' in capsys.readouterr().out


# --- The live view of a routed release ------------------------------------------------------------

def text_of(renderable: Any, width: int = 220) -> str:
    console = Console(record=True, width=width)
    console.print(renderable)
    return console.export_text()


def test_the_traffic_table_shows_mirrors_header_routes_and_the_routes_own_failures() -> None:
    stats = TrafficStats(requests={('digits', 'stable'): 950, ('digits', 'canary'): 50},
                         errors={('digits', 'stable'): 1}, feedback={('digits', 'stable'): 470},
                         mirrored={('digits', 'canary'): 240, ('other', 'canary'): 7},
                         header_routed={('digits', 'canary'): 20},
                         route_failures={('digits', '503'): 4, ('digits', '404'): 1})
    text = text_of(_traffic(stats))
    header = next(line for line in text.splitlines() if 'release/track' in line)
    assert [cell.strip() for cell in header.split('┃')[1:-1]] == ['release/track', 'requests', 'by header',
                                                                  'mirrored', 'errors', 'feedback']
    canary_row = next(line for line in text.splitlines() if 'digits/canary' in line)
    assert [cell.strip() for cell in canary_row.split('│')[1:-1]] == ['digits/canary', '50', '20', '240', '0', '0']
    # A shadow canary that only got copies still has its row.
    shadow_row = next(line for line in text.splitlines() if 'other/canary' in line)
    assert [cell.strip() for cell in shadow_row.split('│')[1:-1]] == ['other/canary', '0', '0', '7', '0', '0']
    assert route_failures_text(stats) == 'route failures: digits: 1 x 404 no rule matched, 4 x 503 no ready endpoint'
    assert 'route failures: digits' in text


def test_a_release_routed_by_pod_counts_keeps_the_plain_traffic_table() -> None:
    text = text_of(_traffic(TrafficStats(requests={('digits', 'stable'): 10})))
    assert 'mirrored' not in text and 'by header' not in text and 'route failures' not in text
    assert 'release/track' in text and 'feedback' in text


def test_the_header_names_the_route_and_says_when_it_is_not_ready() -> None:
    release = load_manifests(EXAMPLE).release
    release['status'] = {'phase': 'Progressing', 'canaryWeight': 5}
    assert route_text(release) == 'traffic by HTTPRoute digits'
    frame = text_of(render(release, ready={'stable': 10, 'canary': 1}))
    assert 'traffic by HTTPRoute digits' in frame and 'ready servers: stable 10, canary 1' in frame
    release['status']['conditions'] = [{'type': 'RouteReady', 'status': 'False', 'reason': 'RouteInvalid',
                                        'message': 'HTTPRoute digits: not found; create it'}]
    assert route_text(release) == 'traffic by HTTPRoute digits: not ready: HTTPRoute digits: not found; create it'
    assert route_text({'spec': {'serving': {'replicas': 4}}}) is None
