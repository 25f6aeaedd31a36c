"""
The demo: a whole staged release on the embedded default, watched live, with a report at the end.

:func:`run_demo` starts a :class:`~.stack.LocalStack`, applies the ModelRelease (by default
``examples/digits-demo.yaml``) with the local Prometheus' address filled in, shows the live view
until the release is Released, RolledBack or Failed (or the time is up), writes the report
directory (chart, final ModelRelease, timeline), prints a summary, and stops everything. It starts
from a clean state directory of its own (no objects, models or metrics of an earlier demo); a second
demo on the same directory is refused while the first runs. An operator that exits meanwhile is
started again, and the view says so.

The rollback variant makes the last stage's canary faulty: it adds to ``spec.serving.template``
the annotations that the local runner turns into the reference server's fault injection
(``local.modelrelease.io/inject-error-rate`` for pods matching
``local.modelrelease.io/inject-into: track=canary,stage=<last stage>``), so that the error-rate
check fails and the operator rolls back. The same annotations work in any ModelRelease applied
to ``modelrelease local up``.

A release file may hold more than the ModelRelease: the HTTPRoutes it routes by
(``spec.serving.trafficRouting.gatewayAPI.httpRoute``, e.g. ``examples/digits-gateway.yaml``), as
further YAML documents. The demo creates them through the API before the release, as a user would
``kubectl apply`` the route first, so the operator finds its route at its first pass.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes
import yaml
from rich.console import Console

from modelrelease.api.status import TERMINAL_PHASES
from modelrelease_local.gateway_crd import GROUP, HTTPROUTE_API_VERSION, HTTPROUTE_PLURAL, VERSION
from modelrelease_local.report import ReleaseRecorder, summary_table, write_report
from modelrelease_local.runner import FAULT_SELECTOR
from modelrelease_local.stack import LocalStack, StackSettings
from modelrelease_local.view import LiveView, render

__all__ = ["DEMO_RELEASE", "DemoInputError", "DemoManifests", "DemoResult", "create_routes", "load_manifests",
           "load_release", "prepare_release", "run_demo"]

DEMO_RELEASE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "digits-demo.yaml"
DEFAULT_TIMEOUT = 600.0


@dataclasses.dataclass(frozen=True)
class DemoResult:
    phase: str
    expected: str
    release: dict[str, Any]
    files: dict[str, pathlib.Path]
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.phase == self.expected


class DemoInputError(ValueError):
    """A release file the demo cannot run: the message names the file, the document and the fix."""


@dataclasses.dataclass(frozen=True)
class DemoManifests:
    """What a release file holds: the ModelRelease, and the HTTPRoutes to create before it."""

    release: dict[str, Any]
    routes: tuple[dict[str, Any], ...] = ()


def _document_kind(document: Mapping[str, Any]) -> str:
    return f"{document.get('apiVersion') or '?'} {document.get('kind') or '?'}"


def load_manifests(path: pathlib.Path | None = None) -> DemoManifests:
    """The ModelRelease of a YAML file (one document or several) and the HTTPRoutes beside it."""
    candidates = [path] if path is not None else [DEMO_RELEASE, pathlib.Path("examples/digits-demo.yaml")]
    found = next((c for c in candidates if c is not None and c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no ModelRelease file at {', '.join(str(c) for c in candidates)}")
    releases: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for index, document in enumerate(yaml.safe_load_all(found.read_text())):
        if document is None:  # an empty document, e.g. after a trailing ---
            continue
        where = f"{found}: document {index + 1}"
        if not isinstance(document, dict):
            raise DemoInputError(f"{where} is not an object: each document must be a Kubernetes object")
        if document.get("kind") == "ModelRelease":
            releases.append(document)
        elif document.get("kind") == "HTTPRoute" and document.get("apiVersion") == HTTPROUTE_API_VERSION:
            routes.append(document)
        else:
            raise DemoInputError(f"{where} is a {_document_kind(document)}: the demo creates one ModelRelease and "
                                 f"{HTTPROUTE_API_VERSION} HTTPRoutes; remove it or apply it with kubectl")
    if len(releases) != 1:
        raise DemoInputError(f"{found}: holds {len(releases)} ModelReleases; the demo runs exactly one")
    release = releases[0]
    wanted = (((release.get("spec") or {}).get("serving") or {}).get("trafficRouting") or {}).get("gatewayAPI")
    route_name = (wanted or {}).get("httpRoute")
    if route_name and route_name not in {(r.get("metadata") or {}).get("name") for r in routes}:
        raise DemoInputError(f"{found}: spec.serving.trafficRouting.gatewayAPI.httpRoute names HTTPRoute "
                             f"{route_name}, which the file does not hold: add it as a document of the file "
                             "(the demo's cluster starts empty)")
    return DemoManifests(release, tuple(routes))


def load_release(path: pathlib.Path | None = None) -> dict[str, Any]:
    """The ModelRelease of the file (see :func:`load_manifests`)."""
    return load_manifests(path).release


def create_routes(client: kubernetes.client.ApiClient, routes: Sequence[Mapping[str, Any]],
                  default_namespace: str = "default") -> list[dict[str, Any]]:
    """Create each HTTPRoute through the API (in the release's namespace unless it names its own)."""
    created = []
    objects = kubernetes.client.CustomObjectsApi(client)
    for route in routes:
        body = copy.deepcopy(dict(route))
        metadata = body.setdefault("metadata", {})
        namespace = metadata.setdefault("namespace", default_namespace)
        try:
            answer = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, HTTPROUTE_PLURAL, body)
        except kubernetes.client.ApiException as exc:
            raise DemoInputError(f"HTTPRoute {namespace}/{metadata.get('name')}: the API refused it "
                                 f"({exc.status}): {exc.body}; fix the route in the release file") from None
        created.append(dict(answer))  # type: ignore[call-overload]
    return created


def prepare_release(manifest: Mapping[str, Any], prometheus_url: str, *, rollback: bool = False,
                    error_rate: float = 0.5) -> dict[str, Any]:
    """The manifest with the local Prometheus, and for a rollback a faulty last-stage canary."""
    prepared = copy.deepcopy(dict(manifest))
    spec = prepared.setdefault("spec", {})
    spec.setdefault("analysis", {}).setdefault("prometheus", {})["url"] = prometheus_url
    if rollback:
        last_stage = spec["stages"][-1]["name"]
        template = spec.setdefault("serving", {}).setdefault("template", {}) or {}
        spec["serving"]["template"] = template
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        annotations["local.modelrelease.io/inject-error-rate"] = str(error_rate)
        annotations[FAULT_SELECTOR] = f"track=canary,stage={last_stage}"
    return prepared


def default_report_dir(name: str, rollback: bool) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("reports") / f"{stamp}-{name}{'-rollback' if rollback else ''}"


def _ready_per_track(stack: LocalStack, namespace: str, name: str) -> dict[str, int]:
    ready: dict[str, int] = {}
    for key, ports in stack.runner.endpoints().items():
        if (key.namespace, key.release) == (namespace, name):
            ready[key.track] = ready.get(key.track, 0) + len(ports)
    return ready


def run_demo(manifest: Mapping[str, Any], *, settings: StackSettings | None = None, rollback: bool = False,
             report_dir: pathlib.Path | None = None, console: Console | None = None, live: bool = True,
             timeout: float = DEFAULT_TIMEOUT, routes: Sequence[Mapping[str, Any]] = ()) -> DemoResult:
    """Run one release to its end on a fresh local stack; see the module's documentation. ``routes``
    are HTTPRoutes created before the release."""
    settings = settings or StackSettings(state_dir=pathlib.Path(".modelrelease-local") / "demo")
    console = console or Console()
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta["name"]
    report_dir = report_dir or default_report_dir(name, rollback)
    # A demo starts clean, once the state directory is its own (a second demo on it is refused first).
    settings = dataclasses.replace(settings, fresh=True)
    with LocalStack(settings) as stack:
        recorder = ReleaseRecorder(lambda: stack.get_release(namespace, name))
        if routes:
            with stack.api_client() as client:
                create_routes(client, routes, namespace)
        stack.apply_release(prepare_release(manifest, stack.prometheus_url, rollback=rollback))
        recorder.start()
        started = time.monotonic()
        view = LiveView(console) if live else contextlib.nullcontext()
        try:
            with view:
                while True:
                    release = recorder.latest
                    phase = ((release or {}).get("status") or {}).get("phase")
                    if isinstance(view, LiveView):
                        view.update(release, elapsed=time.monotonic() - started, progress=stack.executor.progress(),
                                    traffic=stack.traffic.stats if stack.traffic else None,
                                    ready=_ready_per_track(stack, namespace, name), restarts=stack.restarts())
                    if phase in TERMINAL_PHASES or time.monotonic() - started > timeout:
                        break
                    # An operator that exits is started again by the stack (the view says so): keep watching.
                    time.sleep(0.5)
        finally:
            recorder.stop()
        elapsed = time.monotonic() - started
        release = dict(recorder.latest or {"metadata": {"name": name}})
        files = write_report(report_dir, release, recorder.samples)
        restarts = stack.restarts()
    if not live:
        console.print(render(release, elapsed=elapsed, restarts=restarts))
    console.print(summary_table(release, elapsed))
    console.print(f"Report: {report_dir}/ (chart.png, modelrelease.yaml, timeline.json)")
    phase = (release.get("status") or {}).get("phase") or "Pending"
    return DemoResult(phase, "RolledBack" if rollback else "Released", release, files, elapsed)
