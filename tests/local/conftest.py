"""
Fixtures for the embedded API server: a server per test (in a background thread, so that the
synchronous kubernetes client and kubectl can talk to it), its kubeconfig, and API clients.
"""
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from modelrelease_local.controllers import ControllerEmulator
from modelrelease_local.outcomes import JobOutcome, ScriptedExecutor, ScriptedRollout

WIDGETS_CRD: dict[str, Any] = {
    'apiVersion': 'apiextensions.k8s.io/v1',
    'kind': 'CustomResourceDefinition',
    'metadata': {'name': 'widgets.example.com'},
    'spec': {
        'group': 'example.com',
        'scope': 'Namespaced',
        'names': {'plural': 'widgets', 'singular': 'widget', 'kind': 'Widget', 'shortNames': ['wd'],
                  'categories': ['examples']},
        'versions': [{
            'name': 'v1', 'served': True, 'storage': True,
            'schema': {'openAPIV3Schema': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True}},
            'subresources': {'status': {}},
            'additionalPrinterColumns': [
                {'name': 'Size', 'type': 'integer', 'jsonPath': '.spec.size'},
                {'name': 'Phase', 'type': 'string', 'jsonPath': '.status.phase'},
                {'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'},
            ],
        }],
    },
}


@pytest.fixture
def outcomes() -> dict[str, JobOutcome]:
    """Job name -> scripted outcome; Jobs not listed succeed without a message."""
    return {}


@pytest.fixture
def executor(outcomes: dict[str, JobOutcome]) -> ScriptedExecutor:
    return ScriptedExecutor(lambda job: outcomes.get(job['metadata']['name'], JobOutcome.succeeded()))


@pytest.fixture
def rollout() -> ScriptedRollout:
    return ScriptedRollout()


@pytest.fixture
def server(executor: ScriptedExecutor, rollout: ScriptedRollout) -> Iterator[EmbeddedApiServer]:
    emulator = ControllerEmulator(executor, rollout, job_backoff_scale=0.0)  # retries at once
    with EmbeddedApiServer(controllers=[emulator]) as server:
        yield server


@pytest.fixture
def kubeconfig(server: EmbeddedApiServer, tmp_path: pathlib.Path) -> pathlib.Path:
    return server.write_kubeconfig(tmp_path / 'kubeconfig')


@pytest.fixture
def api_client(kubeconfig: pathlib.Path) -> Iterator[kubernetes.client.ApiClient]:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    with kubernetes.client.ApiClient(configuration) as client:
        yield client


@pytest.fixture
def core(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: kubernetes.client.ApiClient) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client)


@pytest.fixture
def batch(api_client: kubernetes.client.ApiClient) -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(api_client)


@pytest.fixture
def custom(api_client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client)


@pytest.fixture
def widgets_crd(api_client: kubernetes.client.ApiClient) -> dict[str, Any]:
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    extensions.create_custom_resource_definition(WIDGETS_CRD)
    return WIDGETS_CRD


def deployment_body(name: str, replicas: int = 1, image: str = 'server:1') -> dict[str, Any]:
    return {
        'apiVersion': 'apps/v1', 'kind': 'Deployment',
        'metadata': {'name': name, 'labels': {'app': name, 'tier': 'serving'}},
        'spec': {
            'replicas': replicas,
            'selector': {'matchLabels': {'app': name}},
            'template': {'metadata': {'labels': {'app': name}},
                         'spec': {'containers': [{'name': 'main', 'image': image,
                                                  'env': [{'name': 'A', 'value': '1'}]}]}},
        },
    }


def job_body(name: str, *, labels: dict[str, str] | None = None, backoff_limit: int = 0,
             deadline: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        'backoffLimit': backoff_limit,
        'template': {'metadata': {'labels': {'role': 'trainer'}},
                     'spec': {'restartPolicy': 'Never', 'containers': [{'name': 'train', 'image': 'trainer:1'}]}},
    }
    if deadline is not None:
        spec['activeDeadlineSeconds'] = deadline
    return {'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'name': name, 'labels': labels or {}}, 'spec': spec}


KUBECTL = shutil.which('kubectl') or '/usr/bin/kubectl'
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Kubectl:
    """The real kubectl against the test's server, with its own discovery cache."""
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, '--kubeconfig', str(kubeconfig), '--cache-dir', str(tmp_path / 'cache'),
                                 *args], capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            pytest.fail(f'kubectl {" ".join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}')
        return result
    return run
