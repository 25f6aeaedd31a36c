"""What the embedded API's strictness costs per write: the ModelRelease CRD's schema and CEL rules, and persistence.

    .venv/bin/python bench/admission.py [--releases 200] [--status-writes 5]

One process, one run, three API servers side by side, each served over HTTP to the kubernetes client:
- lax: the CRD with `x-kubernetes-preserve-unknown-fields` and no rules (what the embedded API did before
  it enforced schemas: every write is stored as sent);
- strict: the real CRD (structural schema, pruning, defaults, CEL rules), in memory;
- strict+disk: the same, with every write committed to `api.sqlite` before it is answered.
Each creates --releases ModelReleases (each spec goes through every CEL rule) and then writes their status
--status-writes times (the spec is unchanged, so CEL ratchets; the status is validated and pruned).
Printed: milliseconds per create and per status write, and each as a ratio to lax. The figures are
wall-clock on a shared machine; the ratios, from one run, are what to compare.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import kubernetes

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.operator.conftest import release_spec

from modelrelease import api
from modelrelease.api.crd import build_crd
from modelrelease_local.apiserver import EmbeddedApiServer


def lax_crd() -> dict[str, Any]:
    crd = build_crd()
    for version in crd["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return crd


def status_of(index: int, write: int) -> dict[str, Any]:
    """A status of the size a release in its canary carries."""
    return {"status": {
        "phase": "Progressing", "currentStage": "grow", "stageIndex": 1, "stepIndex": write % 2,
        "canaryWeight": 10 + write, "observedGeneration": 1, "run": 1,
        "message": f"release {index}, write {write}",
        "conditions": [{"type": kind, "status": "True", "reason": "Bench", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
                       for kind in ("Ready", "Progressing")],
    }}


def measure(server: EmbeddedApiServer, crd: dict[str, Any], releases: int, status_writes: int) -> tuple[float, float]:
    client = kubernetes.config.new_client_from_config_dict(server.kubeconfig())
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(crd)
    custom = kubernetes.client.CustomObjectsApi(client)
    spec = release_spec("http://127.0.0.1:9090")

    def timed(action: Callable[[int], None], count: int) -> float:
        started = time.perf_counter()
        for index in range(count):
            action(index)
        return (time.perf_counter() - started) / count * 1000

    def create(index: int) -> None:
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": f"r{index}"},
                "spec": copy.deepcopy(spec)}
        custom.create_namespaced_custom_object(api.GROUP, api.VERSION, "default", api.PLURAL, body)

    def write_status(index: int) -> None:
        name, write = f"r{index % releases}", index // releases
        custom.patch_namespaced_custom_object_status(api.GROUP, api.VERSION, "default", api.PLURAL, name,
                                                     status_of(index, write))

    per_create = timed(create, releases)
    per_status = timed(write_status, releases * status_writes)
    client.close()
    return per_create, per_status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=200)
    parser.add_argument("--status-writes", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, crd, state_file in [
            ("lax", lax_crd(), None),
            ("strict", build_crd(), None),
            ("strict+disk", build_crd(), pathlib.Path(scratch) / "api.sqlite"),
        ]:
            with EmbeddedApiServer(state_file=state_file) as server:
                rows.append((label, *measure(server, crd, args.releases, args.status_writes)))
    base_create, base_status = rows[0][1], rows[0][2]
    print(f"{args.releases} creates and {args.releases * args.status_writes} status writes per API server")
    print(f"{'API':<12} {'ms/create':>10} {'x lax':>6} {'ms/status':>10} {'x lax':>6}")
    for label, per_create, per_status in rows:
        print(f"{label:<12} {per_create:>10.2f} {per_create / base_create:>6.2f} "
              f"{per_status:>10.2f} {per_status / base_status:>6.2f}")


if __name__ == "__main__":
    main()
