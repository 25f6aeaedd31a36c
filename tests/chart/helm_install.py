"""`helm install` through helm-sdkpy (Helm's own Go engine), for the chart tests.

Runs in the Python 3.12 virtualenv that holds helm-sdkpy, never in the project's environment, so it
imports nothing of the project. It reads one JSON request on stdin:
    {"kubeconfig": path, "namespace": ns, "release": name, "chart": path, "values": {...}}
and writes one JSON answer on stdout: {"manifest": text, "notes": text} or {"error": text}.
With "action": "lint" it runs `helm lint` on the chart instead and answers {"lint": Helm's result}.
"""

from __future__ import annotations

import asyncio
import json
import sys

import helm_sdkpy


def install(request: dict) -> dict:
    config = helm_sdkpy.Configuration(namespace=request["namespace"], kubeconfig=request["kubeconfig"])
    # wait=False: nothing runs the operator's pod here; Helm still creates the CRD from crds/ and every
    # rendered object, and keeps the rendered manifest in its release record.
    release = asyncio.run(helm_sdkpy.Install(config).run(
        request["release"], request["chart"], values=request["values"], create_namespace=True,
        wait=False, timeout=60))
    return {"manifest": release.get("manifest", ""), "notes": (release.get("info") or {}).get("notes", "")}


def lint(request: dict) -> dict:
    config = helm_sdkpy.Configuration(namespace=request["namespace"], kubeconfig=request["kubeconfig"])
    return {"lint": asyncio.run(helm_sdkpy.Lint(config).run(request["chart"]))}


def main() -> int:
    request = json.load(sys.stdin)
    try:
        answer = lint(request) if request.get("action") == "lint" else install(request)
    except helm_sdkpy.HelmError as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 1
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
