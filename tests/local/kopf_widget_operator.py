"""
A tiny kopf operator for the tests of the embedded API server (run by ``kopf run``, not collected).

It exercises what the real operator will rely on: a create handler that patches the status and
posts an Event, a timer, a delete handler (so a finalizer is added and later removed).
"""
import logging
from typing import Any

import kopf


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Read $KUBECONFIG now (the kubernetes client would have read it once, at its import).
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 30


@kopf.on.create('example.com', 'v1', 'widgets')
def create_widget(spec: kopf.Spec, patch: kopf.Patch, body: kopf.Body, **_: Any) -> dict[str, Any]:
    patch.status['phase'] = 'Created'
    kopf.info(body, reason='WidgetCreated', message=f"A widget of size {spec.get('size')}")
    return {'size': spec.get('size')}


@kopf.timer('example.com', 'v1', 'widgets', interval=0.2, idle=0.0)
def tick(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    patch.status['ticks'] = int(status.get('ticks') or 0) + 1


@kopf.on.delete('example.com', 'v1', 'widgets')
def delete_widget(name: str | None, logger: kopf.Logger, **_: Any) -> None:
    logger.info(f'Widget {name} is going away.')
