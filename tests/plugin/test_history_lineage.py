"""`kubectl modelrelease history` shows each kept version's data by content and how many workers trained it."""

from __future__ import annotations

import io

from rich.console import Console

from modelrelease.kubectl.render import history_table

HYPER = {"epochs": 5, "batchSize": 64, "optimizer": "adam", "learningRate": 0.001, "weightDecay": 0.0, "seed": 0,
         "evalFraction": 0.2, "initFrom": "previous", "mixedPrecision": "auto"}


def _version(name: str, stage: str, data_hash: str | None, workers: int | None) -> dict:
    version = {"id": "sha256:" + name[-1] * 64, "name": name, "path": f"/models/{name}", "stage": stage,
               "dataSource": "/data/train.npz", "releasedAt": "2026-12-01T10:00:00Z"}
    if data_hash:
        version["dataHash"] = data_hash
    if workers:
        version["hyperparameters"] = {**HYPER, "workers": workers}
    return version


def test_history_shows_the_data_hash_and_the_workers() -> None:
    old = _version("warmup-aaaaaaaaaaaa", "warmup", None, None)  # recorded before lineage by content
    new = _version("full-bbbbbbbbbbbb", "full", "md5:0123456789abcdef0123456789abcdef", 4)
    obj = {"metadata": {"name": "digits"}, "status": {"history": [old, new], "stable": new}}
    out = io.StringIO()
    Console(file=out, width=200).print(history_table(obj))
    lines = out.getvalue().splitlines()
    assert "WORKERS" in lines[0]
    row = next(line for line in lines if "full-bbbbbbbbbbbb" in line)
    assert "/data/train.npz md5:0123456789a" in row and " 4 " in row
    old_row = next(line for line in lines if "warmup-aaaaaaaaaaaa" in line)
    assert "/data/train.npz" in old_row and "md5:" not in old_row
