"""
Fixtures for the local runtime: Jobs and Deployments exactly as the operator builds them, run by
the process executor and runner against a per-test artifact directory.
"""
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest
import yaml

from modelrelease.api import parse_spec
from modelrelease.api.spec import ModelReleaseSpec
from modelrelease.api.status import ModelVersion
from modelrelease.core.model import CreateJob
from modelrelease.manifests.job import build_job
from modelrelease.manifests.serving import build_deployment

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / 'examples' / 'digits-demo.yaml'
OWNER = {'apiVersion': 'modelrelease.io/v1alpha1', 'kind': 'ModelRelease',
         'metadata': {'name': 'digits', 'namespace': 'default', 'uid': '0b7e6c1e-0000-4000-8000-00000000d3e0'}}


def demo_spec(**changes: Any) -> ModelReleaseSpec:
    raw = yaml.safe_load(DEMO.read_text())['spec']
    raw.update(changes)
    return parse_spec(raw)


def trainer_job(spec: ModelReleaseSpec, stage: str, name: str, init_from: ModelVersion | None = None,
                extra_args: list[str] | None = None) -> dict[str, Any]:
    """The operator's Job for a stage, with a Pod the way the Job controller makes it."""
    action = CreateJob(name=name, stage=stage, attempt=1, output_path=f'/models/digits/{name}', init_from=init_from)
    job = build_job(spec, OWNER, action)
    if extra_args:
        job['spec']['template']['spec']['containers'][0]['args'] += extra_args
    job['metadata']['uid'] = f'uid-{name}'
    return job


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return {'metadata': {'name': f"{job['metadata']['name']}-x1", 'namespace': 'default'},
            'spec': job['spec']['template']['spec']}


def server_deployment(spec: ModelReleaseSpec, track: str, version: ModelVersion, replicas: int,
                      generation: int = 1) -> dict[str, Any]:
    deployment = build_deployment(spec, OWNER, track, version, replicas)
    deployment['metadata'].update(uid=f'uid-{track}', generation=generation)
    return deployment


@pytest.fixture(scope='session')
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp('artifacts')


@pytest.fixture(scope='session')
def trained(artifact_root: pathlib.Path) -> dict[str, ModelVersion]:
    """Two small real models under <artifact root>/digits (two trainers at once: the machine has 2 cores)."""
    runs = {}
    for name, epochs in (('m1', '1'), ('m2', '2')):
        output = artifact_root / 'digits' / name
        runs[name] = subprocess.Popen(
            [sys.executable, '-m', 'modelrelease_trainer', 'train', '--stage', name, '--data', 'sklearn:digits',
             '--epochs', epochs, '--output', str(output), '--termination-log', str(output) + '.json'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    versions = {}
    try:
        for name, process in runs.items():
            assert process.wait(timeout=300) == 0, f'training {name} failed'
            result = json.loads((artifact_root / 'digits' / f'{name}.json').read_text())
            versions[name] = ModelVersion(id=result['version'], name=f"{name}-{result['version'][7:19]}",
                                          path=f'/models/digits/{name}', stage=name)
    finally:
        for process in runs.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return versions


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line or environment names ``text`` (e.g. a test's tmp_path)."""
    found = []
    needle = text.encode()
    for proc in pathlib.Path('/proc').iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / 'cmdline').read_bytes() or needle in (proc / 'environ').read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


@pytest.fixture
def no_leftovers(tmp_path: pathlib.Path) -> Any:
    """After the test: nothing started for it may still run. Whatever does is killed, and the test fails."""
    yield tmp_path
    leftovers = processes_mentioning(str(tmp_path))
    for pid in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert leftovers == [], f'processes left running: {leftovers}'
