"""
The embedded API server's objects on disk: one SQLite file (``<state>/api.sqlite``), as etcd is a
real cluster's.

Every commit of the store writes the object (or removes it) and the resourceVersion counter in one
SQLite transaction before the API answers, so a killed process loses no write it has acknowledged.
The journal is a write-ahead log with ``synchronous=NORMAL``: that survives the death of the
process (what this file is for); only a power loss may lose the last few transactions.

What a restarted server gets back (:meth:`ApiPersistence.load`): every object as it was committed,
uids, resourceVersions, generations and status included, CRDs first so that their resources are
registered before their custom objects come back, and the counter where it stopped (deletions count
too, so no resourceVersion is ever handed out twice). The history of changes is not kept: a watch
from an older resourceVersion is answered 410 Gone and its client lists again, as after an etcd
compaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from modelrelease_local.resources import StorageKey

__all__ = ["CRD_STORAGE", "ApiPersistence", "LoadedState"]

Object = dict[str, Any]
ObjectKey = tuple[str | None, str]
CRD_STORAGE: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    api_group TEXT NOT NULL,
    plural TEXT NOT NULL,
    namespace TEXT NOT NULL,  -- '' for cluster-scoped objects
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (api_group, plural, namespace, name)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class LoadedState:
    """What the file held: objects in load order (CRDs first) and the last resourceVersion handed out."""

    objects: list[tuple[StorageKey, ObjectKey, Object]]
    resource_version: int


def _crd_storage_of(crd: Mapping[str, Any]) -> StorageKey:
    spec = crd.get("spec") or {}
    return (str(spec.get("group") or ""), str((spec.get("names") or {}).get("plural") or ""))


class ApiPersistence:
    """One SQLite file holding the store's objects; writes are synchronous (the store's loop waits)."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection: sqlite3.Connection | None = None
        self._db.executescript(_SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        # Opened again after close(): a stopped server may be started again on the same store.
        if self._connection is None:
            # The store runs on one loop, but a server started from one thread may be stopped from another.
            self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
        return self._connection

    def load(self) -> LoadedState:
        rows = self._db.execute("SELECT api_group, plural, namespace, name, body FROM objects").fetchall()
        objects = [((group, plural), (namespace or None, name), json.loads(body))
                   for group, plural, namespace, name, body in rows]
        objects.sort(key=lambda entry: entry[0] != CRD_STORAGE)  # stable: the rest keep the file's order
        stored_rv = max((int(obj["metadata"]["resourceVersion"]) for _, _, obj in objects), default=0)
        counter = self._db.execute("SELECT value FROM counters WHERE name = 'resourceVersion'").fetchone()
        return LoadedState(objects, max(stored_rv, int(counter[0]) if counter else 0))

    def record(self, storage: StorageKey, key: ObjectKey, obj: Mapping[str, Any] | None, last_rv: int) -> None:
        """Commit one write of the store: ``obj`` is the new state, None for a deletion; ``last_rv`` is
        the counter after it. A deleted CRD takes its custom objects with it, as the store removes them."""
        group, plural = storage
        namespace, name = key[0] or "", key[1]
        with self._transaction():
            if obj is None and storage == CRD_STORAGE:
                self._forget_custom_objects(name)
            if obj is None:
                self._db.execute("DELETE FROM objects WHERE api_group=? AND plural=? AND namespace=? AND name=?",
                                 (group, plural, namespace, name))
            else:
                self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                                 (group, plural, namespace, name, json.dumps(obj, separators=(",", ":"))))
            self._db.execute("INSERT OR REPLACE INTO counters VALUES ('resourceVersion', ?)", (last_rv,))

    def _forget_custom_objects(self, crd_name: str) -> None:
        row = self._db.execute("SELECT body FROM objects WHERE api_group=? AND plural=? AND namespace='' AND name=?",
                               (*CRD_STORAGE, crd_name)).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM objects WHERE api_group=? AND plural=?", _crd_storage_of(json.loads(row[0])))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # In autocommit mode the connection's own context manager opens no transaction: BEGIN does.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the file (its write-ahead log is folded back into it)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

