"""Render the chart with the real Helm engine: `helm install` through helm-sdkpy into an embedded API server.

helm-sdkpy wraps Helm's Go library; it offers install but no client-only `helm template`, so every
render is a real install against a fresh embedded Kubernetes API server (no controllers). Helm then
does all it does on a cluster: values schema, template rendering, CRDs from crds/, object creation,
and a release record whose manifest is exactly what it rendered.

helm-sdkpy needs Python >= 3.12 and the project runs on 3.11, so it lives in a virtualenv of its own
(default `.venv-helm` at the repository root, `MODELRELEASE_HELM_VENV` to move it), created on first use.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import yaml

from modelrelease_local.apiserver import EmbeddedApiServer

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "model-release-operator"
HELM_SDKPY = "helm-sdkpy==0.1.32"
INSTALL_SCRIPT = pathlib.Path(__file__).with_name("helm_install.py")


class HelmError(Exception):
    """Helm refused to install the chart (schema, template or API error); the message is Helm's."""


def helm_venv() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MODELRELEASE_HELM_VENV", REPO / ".venv-helm"))


def _python_312() -> str:
    """An interpreter for the helm virtualenv: $MODELRELEASE_HELM_PYTHON, python3.12/3.13, or pyenv's."""
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [os.environ.get("MODELRELEASE_HELM_PYTHON", ""), shutil.which("python3.12") or "",
                  *sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3")),
                  shutil.which("python3.13") or "", *sorted(glob.glob(f"{pyenv_root}/versions/3.1[3-9]*/bin/python3"))]
    for candidate in filter(None, candidates):
        # pyenv shims exist for versions that are not selected and then fail: ask each one.
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    raise RuntimeError("helm-sdkpy needs Python >= 3.12 and none was found: install one (e.g. `pyenv install "
                       "3.12`) or point MODELRELEASE_HELM_PYTHON at one")


def ensure_helm_python() -> pathlib.Path:
    """The helm virtualenv's interpreter, creating the virtualenv and installing helm-sdkpy once."""
    venv = helm_venv()
    python = venv / "bin" / "python"
    stamp = venv / f".installed-{HELM_SDKPY}"
    if stamp.exists():
        return python
    lock_name = hashlib.sha256(str(venv.resolve()).encode()).hexdigest()[:16]
    with open(pathlib.Path(tempfile.gettempdir()) / f"modelrelease-helm-venv-{lock_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be installing it right now
        if stamp.exists():
            return python
        if not python.exists():
            subprocess.run([_python_312(), "-m", "venv", str(venv)], check=True)
            # Keep the virtualenv out of git even before .gitignore names it.
            (venv / ".gitignore").write_text("*\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", HELM_SDKPY],
                       check=True)
        stamp.touch()
    return python


@dataclasses.dataclass
class Rendered:
    """What one `helm install` rendered, plus the CRDs Helm created from the chart's crds/."""

    namespace: str
    release: str
    objects: list[dict[str, Any]]
    crds: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    @property
    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def all_objects(self) -> Iterator[dict[str, Any]]:
        yield from self.objects
        yield from self.crds


def _helm(server: EmbeddedApiServer, request: dict[str, Any]) -> dict[str, Any]:
    """Run helm_install.py in the helm virtualenv against ``server``; Helm's answer as a dict."""
    python = ensure_helm_python()
    with tempfile.TemporaryDirectory(prefix="helm-render-") as tmp:
        kubeconfig = server.write_kubeconfig(pathlib.Path(tmp) / "kubeconfig")
        env = {**os.environ, "HELM_CACHE_HOME": f"{tmp}/cache", "HELM_CONFIG_HOME": f"{tmp}/config",
               "HELM_DATA_HOME": f"{tmp}/data"}
        done = subprocess.run([str(python), str(INSTALL_SCRIPT)], capture_output=True, text=True, env=env,
                              input=json.dumps({"chart": str(CHART), **request, "kubeconfig": str(kubeconfig)}),
                              timeout=300, check=False)
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"helm_install.py failed ({done.returncode}): {done.stderr[-2000:]}") from None
    if "error" in answer:
        raise HelmError(answer["error"])
    return answer


def render(values: dict[str, Any] | None = None, *, release: str = "mro",
           namespace: str = "model-release-system", crds: list[dict[str, Any]] | None = None) -> Rendered:
    """`helm install <release> charts/model-release-operator -n <namespace> --create-namespace`.

    ``crds`` are created on the server first, as a cluster that already has them (e.g. prometheus-operator's,
    for a ServiceMonitor); the returned ``crds`` are only those from the chart's crds/.
    """
    with EmbeddedApiServer() as server:
        existing = crds or []
        definitions = server.resource("apiextensions.k8s.io/v1", "customresourcedefinitions")
        for crd in existing:
            server.call(server.store.create, definitions, None, crd)
        answer = _helm(server, {"namespace": namespace, "release": release, "values": values or {}})
        before = {crd["metadata"]["name"] for crd in existing}
        created = [crd for crd in server.list_objects("apiextensions.k8s.io/v1", "customresourcedefinitions")
                   if crd["metadata"]["name"] not in before]
    objects = [doc for doc in yaml.safe_load_all(answer["manifest"]) if doc]
    return Rendered(namespace, release, objects, created, answer["notes"])


def lint(chart: pathlib.Path = CHART) -> dict[str, Any]:
    """`helm lint <chart>` (this chart by default): Helm's result (TotalChartsLinted, Messages, Errors)."""
    with EmbeddedApiServer() as server:
        result: dict[str, Any] = _helm(server, {"action": "lint", "namespace": "default", "chart": str(chart)})["lint"]
    return result
