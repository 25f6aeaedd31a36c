"""
What makes the embedded default crash-safe, part by part: the API's objects on disk, the children that
die with their parent, the supervisor that restarts them, and the claim on a state directory.
The whole stack under kills and signals is tested in tests/demo/test_crash_safe_release.py.
"""
import copy
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import kubernetes
import psutil
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.instance import StateClaim, StateInUse
from modelrelease_local.runner import ProcessDeploymentRunner
from modelrelease_local.supervision import Supervisor, popen
from tests.local.conftest import WIDGETS_CRD
from tests.waiting import wait_for


def _client(server: EmbeddedApiServer, directory: pathlib.Path) -> kubernetes.client.ApiClient:
    kubeconfig = server.write_kubeconfig(directory / 'kubeconfig')
    return kubernetes.config.new_client_from_config(str(kubeconfig))


@pytest.fixture
def state_file(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / 'api.sqlite'


def _restarted(state_file: pathlib.Path) -> EmbeddedApiServer:
    """A new server on the file (entering it starts it)."""
    return EmbeddedApiServer(state_file=state_file)


def test_objects_come_back_as_they_were_committed(state_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with EmbeddedApiServer(state_file=state_file) as server, _client(server, tmp_path) as client:
        core = kubernetes.client.CoreV1Api(client)
        kept = core.create_namespaced_config_map('default', {'metadata': {'name': 'kept'}, 'data': {'a': '1'}})
        kept = core.patch_namespaced_config_map('kept', 'default', {'data': {'a': '2'}})
        core.create_namespaced_config_map('default', {'metadata': {'name': 'gone'}})
        core.delete_namespaced_config_map('gone', 'default')
        core.create_namespace({'metadata': {'name': 'team'}})
        pod = core.create_namespaced_pod('team', {'metadata': {'name': 'p'},
                                                  'spec': {'containers': [{'name': 'c', 'image': 'i'}]}})
        core.patch_namespaced_pod_status('p', 'team', {'status': {'phase': 'Running'}})
        pod = core.read_namespaced_pod('p', 'team')
        last_rv = int(core.list_namespaced_config_map('default').metadata.resource_version)

    with _restarted(state_file) as server, _client(server, tmp_path) as client:
        core = kubernetes.client.CoreV1Api(client)
        again = core.read_namespaced_config_map('kept', 'default')
        assert (again.metadata.uid, again.metadata.resource_version, again.data) == (
            kept.metadata.uid, kept.metadata.resource_version, {'a': '2'})
        assert [c.metadata.name for c in core.list_namespaced_config_map('default').items] == ['kept']
        with pytest.raises(kubernetes.client.ApiException) as gone:
            core.read_namespaced_config_map('gone', 'default')
        assert gone.value.status == 404
        pod_again = core.read_namespaced_pod('p', 'team')
        assert pod_again.metadata.uid == pod.metadata.uid and pod_again.status.phase == 'Running'
        assert {'default', 'kube-system', 'team'} <= {n.metadata.name for n in core.list_namespace().items}

        # The counter goes on: no resourceVersion is handed out twice, deletions counted.
        created = core.create_namespaced_config_map('default', {'metadata': {'name': 'new'}})
        assert int(created.metadata.resource_version) == last_rv + 1
        # A write against the resourceVersion read before the restart still holds.
        core.replace_namespaced_config_map('kept', 'default', {
            'metadata': {'name': 'kept', 'resourceVersion': kept.metadata.resource_version}, 'data': {'a': '3'}})


def test_a_watch_from_before_the_restart_is_gone_and_a_relist_sees_everything(
        state_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with EmbeddedApiServer(state_file=state_file) as server, _client(server, tmp_path) as client:
        core = kubernetes.client.CoreV1Api(client)
        old_rv = core.list_namespaced_config_map('default').metadata.resource_version
        core.create_namespaced_config_map('default', {'metadata': {'name': 'made-before'}})

    with _restarted(state_file) as server, _client(server, tmp_path) as client:
        core = kubernetes.client.CoreV1Api(client)
        with pytest.raises(kubernetes.client.ApiException) as gone:
            for _ in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, 'default',
                                                     resource_version=old_rv, timeout_seconds=5):
                pytest.fail('a watch from an old resourceVersion must not replay anything')
        assert gone.value.status == 410
        listed = core.list_namespaced_config_map('default')
        assert [c.metadata.name for c in listed.items] == ['made-before']
        # From the relisted version, a watch gets what happens next.
        core.create_namespaced_config_map('default', {'metadata': {'name': 'made-after'}})
        events = list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, 'default',
                                                      resource_version=listed.metadata.resource_version,
                                                      timeout_seconds=1))
        assert [(e['type'], e['object'].metadata.name) for e in events] == [('ADDED', 'made-after')]


def test_a_crd_comes_back_with_its_custom_objects_and_leaves_with_them(
        state_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with EmbeddedApiServer(state_file=state_file) as server, _client(server, tmp_path) as client:
        kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(copy.deepcopy(WIDGETS_CRD))
        custom = kubernetes.client.CustomObjectsApi(client)
        wait_for(lambda: _served(custom), message='the widgets resource to be served')
        made = custom.create_namespaced_custom_object('example.com', 'v1', 'default', 'widgets',
                                                      {'apiVersion': 'example.com/v1', 'kind': 'Widget',
                                                       'metadata': {'name': 'w'}, 'spec': {'size': 3}})
        custom.patch_namespaced_custom_object_status('example.com', 'v1', 'default', 'widgets', 'w',
                                                     {'status': {'phase': 'Ready'}})

    with _restarted(state_file) as server, _client(server, tmp_path) as client:
        custom = kubernetes.client.CustomObjectsApi(client)
        widget = custom.get_namespaced_custom_object('example.com', 'v1', 'default', 'widgets', 'w')
        assert widget['metadata']['uid'] == made['metadata']['uid']
        assert widget['spec'] == {'size': 3} and widget['status'] == {'phase': 'Ready'}
        kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition('widgets.example.com')

    with _restarted(state_file) as server, _client(server, tmp_path) as client:
        kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(copy.deepcopy(WIDGETS_CRD))
        custom = kubernetes.client.CustomObjectsApi(client)
        wait_for(lambda: _served(custom), message='the widgets resource to be served again')
        listed = custom.list_namespaced_custom_object('example.com', 'v1', 'default', 'widgets')
        assert listed['items'] == []  # the CRD's deletion took its objects, also on disk


def _served(custom: kubernetes.client.CustomObjectsApi) -> bool:
    try:
        custom.list_namespaced_custom_object('example.com', 'v1', 'default', 'widgets')
    except kubernetes.client.ApiException:
        return False
    return True


def test_without_a_state_file_nothing_is_kept(tmp_path: pathlib.Path) -> None:
    with EmbeddedApiServer() as server, _client(server, tmp_path) as client:
        kubernetes.client.CoreV1Api(client).create_namespaced_config_map('default', {'metadata': {'name': 'c'}})
    with EmbeddedApiServer() as server, _client(server, tmp_path) as client:
        assert kubernetes.client.CoreV1Api(client).list_namespaced_config_map('default').items == []
    assert list(tmp_path.glob('*.sqlite')) == []


# Children that die with their parent.

_PARENT = textwrap.dedent('''
    import sys, threading, time
    from modelrelease_local.supervision import popen
    children = []
    # Started from a thread that ends at once: the child must not die with that thread.
    starter = threading.Thread(target=lambda: children.append(popen(['sleep', '600'])))
    starter.start(); starter.join()
    print(children[0].pid, flush=True)
    time.sleep(600)
''')


def test_a_child_outlives_the_thread_that_started_it_but_not_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, '-c', _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.send_signal(signal.SIGKILL)  # no cleanup of any kind runs
        parent.wait(60)
        wait_for(lambda: not _alive(child), message='the child to die with its parent')
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def sleeper() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_the_supervisor_restarts_a_killed_child_and_says_how_it_died(
        sleeper: list[subprocess.Popen[bytes]]) -> None:
    sleeper.append(popen(['sleep', '600']))
    restarted: list[int] = []
    supervisor = Supervisor('sleeper', lambda: sleeper[-1], lambda: sleeper.append(popen(['sleep', '600'])),
                            on_restart=lambda: restarted.append(sleeper[-1].pid))
    supervisor.start()
    try:
        assert supervisor.record.summary() is None
        first = sleeper[0]
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: restarted, message='the child to be started again')
        assert restarted == [sleeper[-1].pid] and sleeper[-1].pid != first.pid and sleeper[-1].poll() is None
        assert supervisor.record.summary() == 'sleeper restarted once (last exit: SIGKILL)'
        sleeper[-1].terminate()
        wait_for(lambda: supervisor.record.restarts == 2, message='a second restart')
        assert supervisor.record.summary() == 'sleeper restarted 2 times (last exit: SIGTERM)'
    finally:
        supervisor.stop()
    stopped_at = len(sleeper)
    sleeper[-1].kill()
    sleeper[-1].wait()
    supervisor_thread_done = not supervisor._thread.is_alive()
    assert supervisor_thread_done and len(sleeper) == stopped_at  # stopped: no more restarts


# The claim on a state directory.

def test_a_second_claim_names_the_first_and_a_dead_holders_claim_is_taken_over(tmp_path: pathlib.Path) -> None:
    holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import pathlib, time
        from modelrelease_local.instance import StateClaim
        StateClaim(pathlib.Path({str(tmp_path)!r})).acquire()
        print('claimed', flush=True)
        time.sleep(600)
    ''')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == 'claimed'
        with pytest.raises(StateInUse) as refused:
            StateClaim(tmp_path).acquire()
        message = str(refused.value)
        assert f'pid {holder.pid} ' in message and 'modelrelease_local.instance' in message
        assert 'since ' in message and '--state-dir' in message
        holder.kill()  # it leaves its lock file and pid file behind
        holder.wait(60)
        assert (tmp_path / 'up.pid').exists()
        claim = StateClaim(tmp_path)
        claim.acquire()
        assert (tmp_path / 'up.pid').read_text().split()[0] == str(psutil.Process().pid)
        claim.release()
        assert not (tmp_path / 'up.pid').exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# The model servers of a restarted stack.

_SERVER = ('import http.server, sys; port = int(sys.argv[sys.argv.index("--port") + 1]); '
           'http.server.HTTPServer(("127.0.0.1", port), type("H", (http.server.BaseHTTPRequestHandler,), '
           '{"do_GET": lambda self: (self.send_response(200), self.end_headers())})).serve_forever()')


def _deployment(name: str) -> dict[str, object]:
    labels = {'app': name}
    return {'metadata': {'name': name}, 'spec': {
        'replicas': 2, 'selector': {'matchLabels': labels},
        'template': {'metadata': {'labels': labels},
                     'spec': {'containers': [{'name': 'server', 'image': 'server',
                                              'command': ['python', '-c', _SERVER]}]}}}}


def _stack_server(state_file: pathlib.Path, artifacts: pathlib.Path) -> tuple[EmbeddedApiServer,
                                                                            ProcessDeploymentRunner]:
    runner = ProcessDeploymentRunner(artifacts)
    return EmbeddedApiServer(state_file=state_file, controllers=[ControllerEmulator(runner=runner)]), runner


def _ports(runner: ProcessDeploymentRunner) -> list[int]:
    return sorted(port for ports in runner.endpoints().values() for port in ports)


def test_a_restarted_stack_starts_the_servers_of_its_ready_deployments(
        state_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    server, runner = _stack_server(state_file, tmp_path / 'artifacts')
    with server, _client(server, tmp_path) as client:
        apps = kubernetes.client.AppsV1Api(client)
        apps.create_namespaced_deployment('default', _deployment('web'))
        ready = wait_for(lambda: (d := apps.read_namespaced_deployment('web', 'default')).status.ready_replicas == 2
                         and d, message='the first servers to be ready')
        assert len(_ports(runner)) == 2
        runner.close()  # the stack's death: its processes go, the store stays

    server, runner = _stack_server(state_file, tmp_path / 'artifacts')
    try:
        with server, _client(server, tmp_path) as client:
            wait_for(lambda: len(_ports(runner)) == 2, message='the servers to be started again')
            again = kubernetes.client.AppsV1Api(client).read_namespaced_deployment('web', 'default')
            # The generation it was, observed and ready: nothing for the operator to roll out again.
            assert again.metadata.generation == ready.metadata.generation
            assert again.status.observed_generation == ready.status.observed_generation
            assert again.status.ready_replicas == 2
            core = kubernetes.client.CoreV1Api(client)
            wait_for(lambda: len(core.list_namespaced_pod('default', label_selector='app=web').items) == 2,
                     message='one Pod per running server, none left of the old ones')
    finally:
        runner.close()


def test_the_live_view_says_what_was_restarted() -> None:
    import io

    from rich.console import Console

    from modelrelease_local.view import render

    console = Console(file=io.StringIO(), width=160)
    console.print(render({'metadata': {'name': 'digits'}, 'status': {'phase': 'Training'}},
                         restarts=['operator restarted 2 times (last exit: SIGKILL)']))
    assert 'operator restarted 2 times (last exit: SIGKILL)' in console.file.getvalue()  # type: ignore[attr-defined]
