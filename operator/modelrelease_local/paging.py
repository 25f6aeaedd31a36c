"""
LIST pagination (``limit`` and ``continue``), as https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks
documents it: a page of at most ``limit`` items, in the order of their keys (namespace, then name),
with ``metadata.continue`` (an opaque token) while more remain, and ``metadata.remainingItemCount``
when the request has no selector.

Consistency: every page of one listing shows the objects as they were when the first page was served,
and reports that page's resourceVersion, as the real server (reading etcd at that revision) does. To
do so a listing that has more pages keeps a snapshot: references to the stored objects of that moment
(stored objects are never changed in place, so this costs one list of references). Snapshots live
five minutes (etcd's default compaction interval) and at most ``max_snapshots`` at a time; a token
whose snapshot is gone is answered 410 Expired with the real server's message. Deviation: that 410
does not carry the real server's "inconsistent continue" token in its Status.
"""
from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from modelrelease_local import errors

__all__ = ["ListPage", "ListPager", "parse_limit"]

Object = dict[str, Any]
SortKey = tuple[str, str]

_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. You can start a new"
            " list without the continue parameter, or use the continue token in this response to retrieve the"
            " remainder of the results. Continuing with the provided token results in an inconsistent list -"
            " objects that were created, modified, or deleted between the time the first chunk was returned and"
            " now may show up in the list.")


def parse_limit(text: str | None) -> int | None:
    """The ``limit`` query parameter: a positive integer; absent or 0 (or negative) means no limit."""
    if text in (None, ""):
        return None
    try:
        limit = int(text)
    except ValueError:
        raise errors.bad_request(f"limit: Invalid value: {text!r}: must be an integer") from None
    return limit if limit > 0 else None


def _sort_key(obj: Object) -> SortKey:
    return (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])


@dataclasses.dataclass(frozen=True)
class ListPage:
    items: list[Object]  # the stored objects themselves: render them, do not change them
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    created: float
    resource_version: str
    objects: list[Object]  # sorted by key


class ListPager:

    def __init__(self, *, max_snapshots: int = 128, lifetime: float = 300.0) -> None:
        self.max_snapshots = max_snapshots
        self.lifetime = lifetime
        self._snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()

    def page(self, objects: Callable[[], Iterable[Object]], resource_version: str, *, limit: int | None,
             continue_token: str | None, matches: Callable[[Object], bool], counted: bool) -> ListPage:
        """One page of a listing. ``objects`` gives every stored object in scope (namespace) now;
        ``matches`` applies the selectors; ``counted``: report remainingItemCount (no selectors)."""
        start: SortKey | None = None
        if continue_token:
            snapshot_id, start = self._decode(continue_token)
            snapshot = self._snapshots.get(snapshot_id)
            if snapshot is None or time.monotonic() - snapshot.created > self.lifetime:
                self._snapshots.pop(snapshot_id, None)
                raise errors.gone(_EXPIRED)
        else:
            snapshot_id = ""
            snapshot = _Snapshot(time.monotonic(), resource_version, sorted(objects(), key=_sort_key))
        rest = [obj for obj in snapshot.objects if start is None or _sort_key(obj) > start]
        selected = [obj for obj in rest if matches(obj)]
        if limit is None or len(selected) <= limit:
            return ListPage(selected, snapshot.resource_version)
        page = selected[:limit]
        if not snapshot_id:
            snapshot_id = self._keep(snapshot)
        token = self._encode(snapshot_id, snapshot.resource_version, _sort_key(page[-1]))
        return ListPage(page, snapshot.resource_version, token, len(selected) - limit if counted else None)

    def _keep(self, snapshot: _Snapshot) -> str:
        now = time.monotonic()
        for snapshot_id, kept in list(self._snapshots.items()):
            if now - kept.created > self.lifetime:
                del self._snapshots[snapshot_id]
        while len(self._snapshots) >= self.max_snapshots:
            self._snapshots.popitem(last=False)
        snapshot_id = secrets.token_hex(8)
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id

    @staticmethod
    def _encode(snapshot_id: str, resource_version: str, last: SortKey) -> str:
        # Shaped as the real server's tokens (base64 of {"v", "rv", "start"}), plus the snapshot's id.
        start = f"{last[0]}/{last[1]}" if last[0] else last[1]
        body = {"v": "meta.k8s.io/v1", "rv": int(resource_version), "start": start + "\x00", "snapshot": snapshot_id,
                "key": list(last)}
        return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")

    @staticmethod
    def _decode(token: str) -> tuple[str, SortKey]:
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if body.get("v") != "meta.k8s.io/v1":
                raise ValueError(f"unknown version {body.get('v')!r}")
            namespace, name = body["key"]
            return str(body["snapshot"]), (str(namespace), str(name))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise errors.bad_request(f"continue key is not valid: {exc}; start the list again without"
                                     f" the continue parameter") from None
