"""Leader election on a coordination.k8s.io Lease, so that a standby replica can take over.

As client-go's leaderelection does it: the leader renews the Lease every ``renew_every`` seconds; a
standby takes the Lease over when it has not seen it change for ``duration`` seconds (measured on its
own clock, so clocks that disagree between nodes do not matter); a leader that could not renew for
``renew_deadline`` seconds stops acting before anyone else may start. Every write carries the
resourceVersion it read, so two replicas never both win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


class LeaseStore(Protocol):
    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, lease: dict[str, Any]) -> dict[str, Any] | None: ...
    def replace(self, lease: dict[str, Any]) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew_deadline: float = 10.0
    renew_every: float = 2.0
    retry_every: float = 2.0

    @classmethod
    def for_duration(cls, namespace: str, name: str, identity: str, duration: float = 15.0) -> LeaseSettings:
        """client-go's proportions: renew within 2/3 of the lease, try every 2/15 of it."""
        step = max(0.2, duration * 2 / 15)
        return cls(namespace, name, identity, duration, duration * 2 / 3, step, step)


def _micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One replica's side of the election; ``step`` is called in a loop, ``leading`` read by the daemons."""

    def __init__(self, leases: LeaseStore, settings: LeaseSettings,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.leases, self.settings, self.clock, self.wall = leases, settings, clock, wall
        self.leading = False
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    def step(self) -> float:
        """Acquire or renew once; the seconds until the next step."""
        try:
            self._try()
        except Exception as exc:  # the API is away: keep leading only within the renew deadline
            log.warning("leader election: %s", exc)
        if self.leading and self.clock() - self._renewed_at > self.settings.renew_deadline:
            log.error("leader election: could not renew the lease for %.0fs; stopping", self.settings.renew_deadline)
            self.leading = False
        return self.settings.renew_every if self.leading else self.settings.retry_every

    def release(self) -> None:
        """On shutdown: give the Lease up, so that a standby takes over at once instead of after it expires."""
        if not self.leading:
            return
        self.leading = False
        lease = self.leases.get(self.settings.namespace, self.settings.name)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.settings.identity:
            lease["spec"]["holderIdentity"] = ""
            self.leases.replace(lease)

    def _try(self) -> None:
        settings, now = self.settings, self.wall()
        lease = self.leases.get(settings.namespace, settings.name)
        if lease is None:
            created = self.leases.create(self._lease(None, now, transitions=0))
            self._won(created is not None)
            return
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = (holder, spec.get("renewTime"))
        if seen != self._observed:
            self._observed, self._observed_at = seen, self.clock()
        if holder == settings.identity:
            lease["spec"] = {**spec, "renewTime": _micro_time(now), "leaseDurationSeconds": round(settings.duration)}
            self._won(self.leases.replace(lease) is not None)
            return
        expired = not holder or self.clock() - self._observed_at >= settings.duration
        if not expired:
            self._lose()
            return
        taken = self._lease(lease, now, transitions=int(spec.get("leaseTransitions") or 0) + 1)
        self._won(self.leases.replace(taken) is not None)

    def _lease(self, current: dict[str, Any] | None, now: datetime, transitions: int) -> dict[str, Any]:
        settings = self.settings
        metadata = (current or {}).get("metadata") or {"name": settings.name, "namespace": settings.namespace}
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": settings.identity, "leaseDurationSeconds": round(settings.duration),
                     "acquireTime": _micro_time(now), "renewTime": _micro_time(now), "leaseTransitions": transitions},
        }

    def _won(self, ok: bool) -> None:
        if ok:
            if not self.leading:
                log.info("leader election: %s leads (lease %s/%s)", self.settings.identity,
                         self.settings.namespace, self.settings.name)
            self.leading = True
            self._renewed_at = self.clock()
        else:
            self._lose()

    def _lose(self) -> None:
        if self.leading:
            log.warning("leader election: %s lost the lease", self.settings.identity)
        self.leading = False
