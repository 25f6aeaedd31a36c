"""`python -m modelrelease_local up` serves kubectl until `down` stops it, and everything it started."""
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _local(state: pathlib.Path, *args: str) -> list[str]:
    return [sys.executable, '-m', 'modelrelease_local', '--state-dir', str(state), *args]


def _kubectl(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(['kubectl', *args, '--kubeconfig', str(kubeconfig)], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, 'PATH': path})


def test_up_serves_kubectl_and_down_stops_everything(no_leftovers: pathlib.Path) -> None:
    state = no_leftovers / 'state'
    kubeconfig = state / 'kubeconfig'
    up = subprocess.Popen(_local(state, 'up', '--no-traffic', '--prometheus-port', '0'), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        served = wait_for(lambda: kubeconfig.exists() and (r := _kubectl(kubeconfig, 'get', 'mrel')).returncode == 0
                          and r, message='kubectl to list ModelReleases')
        assert 'No resources found' in served.stderr
        crds = _kubectl(kubeconfig, 'get', 'crd', '-o', 'name')
        assert 'modelreleases.modelrelease.io' in crds.stdout
        wait_for(lambda: 'operator.log' in os.listdir(state / 'logs'), message='the operator to start')
        plugin = _kubectl(kubeconfig, 'modelrelease', 'list')  # kubectl finds the plugin on PATH
        assert plugin.returncode == 0 and 'No ModelReleases in default' in plugin.stdout, plugin

        again = subprocess.run(_local(state, 'up'), capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 1 and 'Already up' in again.stdout

        down = subprocess.run(_local(state, 'down'), capture_output=True, text=True, timeout=180, check=False)
        assert down.returncode == 0 and 'Stopped' in down.stdout
        output, _ = up.communicate(timeout=120)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            up.communicate(timeout=60)
    text = output.decode(errors='replace')
    assert up.returncode == 0, text
    assert f'export KUBECONFIG={kubeconfig}' in text
    assert not (state / 'up.pid').exists()
    nothing = subprocess.run(_local(state, 'down'), capture_output=True, text=True, timeout=60, check=False)
    assert nothing.returncode == 0 and 'Nothing is up' in nothing.stdout
