"""
A kopf operator for the watch-history tests (run by ``kopf run``, not collected): it records in each
widget's status the spec.size it last handled, so a test can see which state kopf ended up with.
"""
from typing import Any

import kopf


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.server_timeout = 30
    settings.persistence.finalizer = "example.com/relist-test"


@kopf.on.create("example.com", "v1", "widgets")
@kopf.on.update("example.com", "v1", "widgets")
def remember_size(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["seen"] = spec.get("size")
