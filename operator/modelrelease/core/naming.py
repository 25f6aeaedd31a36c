"""Deterministic names and hashes, so that a restarted operator finds what it made."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modelrelease.api.spec import RELEASE_FIELDS, ModelReleaseSpec


def _digest(content: Any) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_hash(spec: ModelReleaseSpec) -> str:
    """Hash of what makes the model (model, training, stages): a change here restarts the release."""
    dumped = spec.model_dump(mode="json")
    return _digest({k: dumped[k] for k in RELEASE_FIELDS})


def serving_hash(spec: ModelReleaseSpec) -> str:
    """Hash of what shapes a server pod besides its model version; a change rolls the Deployments."""
    serving = spec.model_dump(mode="json", include={"serving", "model"})
    serving["serving"].pop("replicas")
    return _digest(serving)


def _short(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def job_name(release: str, stage: str, attempt: int, run: int, spec_digest: str, workers: int = 1) -> str:
    """<release>-<stage>-<hash>, at most 63 characters (Jobs label their pods with this name).

    A multi-worker Job's pods are named by the host <job>-<index>, a DNS label of at most 63 characters, so its
    name is at most 60 and has no dots."""
    # The whole release name is hashed: two releases whose names share their first 20 or 24 characters
    # (or differ by '.' and '-') must never meet at one Job name and adopt each other's Job.
    suffix = _short(spec_digest, stage, str(attempt), str(run), release)
    if workers > 1:
        head = f"{release[:20].replace('.', '-').rstrip('-')}-{stage[:28].rstrip('-')}"
        return f"{head}-{suffix}"
    head = f"{release[:24].rstrip('-')}-{stage[:30].rstrip('-')}"
    return f"{head}-{suffix}"


def worker_service_name(job: str) -> str:
    """The headless Service of a multi-worker Job: the Job's name, which a Service needs to start with a letter."""
    return job if job[:1].isalpha() else f"w{job}"


def worker_hosts(job: str, namespace: str, workers: int, port: int) -> list[str]:
    """Each worker's address: its pod's stable DNS name under the headless Service, by completion index."""
    service = worker_service_name(job)
    return [f"{job}-{index}.{service}.{namespace}.svc:{port}" for index in range(workers)]


def deployment_name(release: str, track: str) -> str:
    return f"{release}-{track}"


def version_name(stage: str, version_id: str) -> str:
    digest = version_id.split(":", 1)[-1]
    return f"{stage}-{digest[:12]}"


def uri_version_id(uri: str) -> str:
    return "uri:" + hashlib.sha256(uri.encode()).hexdigest()


def track_service_name(release: str, track: str) -> str:
    """The Service of one track, for traffic routing: <release>-stable or <release>-canary."""
    return f"{release}-{track}"
