"""Lineage: data hashed the way DVC records it, and the params.yaml / dvc.yaml a version folder carries."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import yaml

from modelrelease_trainer import lineage
from modelrelease_trainer.exit_codes import DataError, TransientError
from modelrelease_trainer.sources import parse_source


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def hash_of(path: Path | str) -> str:
    return lineage.data_hash(parse_source(str(path)))


def test_file_hash_is_md5_of_its_bytes(tmp_path: Path) -> None:
    known = tmp_path / "hello.csv"
    known.write_bytes(b"hello\n")
    assert hash_of(known) == "md5:b1946ac92492d2347c6235b4d2611184"  # `md5sum` of "hello\n"
    # CRLF line ends are hashed as they are (DVC 3's md5 converts nothing).
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"1,2,0\r\n3,4,1\r\n")
    assert hash_of(crlf) == "md5:" + md5(b"1,2,0\r\n3,4,1\r\n")


def test_a_file_larger_than_one_chunk_hashes_whole(tmp_path: Path) -> None:
    content = bytes(range(256)) * (3 * lineage.CHUNK_BYTES // 256) + b"tail"
    big = tmp_path / "big.npz"
    big.write_bytes(content)
    assert hash_of(big) == "md5:" + md5(content)


def test_fraction_and_file_scheme_do_not_change_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"1,2,0\n")
    plain = hash_of(path)
    assert lineage.data_hash(parse_source(f"file:{path}?fraction=0.3")) == plain
    assert lineage.data_hash(parse_source(f"file://{path}")) == plain


def make_tree(root: Path) -> dict[str, bytes]:
    """A small data folder; returns the files DVC would hash, by relative path."""
    files = {
        "b.csv": b"1,2,0\n",
        "sub/c.npz": b"\x00\x01binary",
        "sub/deeper/d.csv": b"5,6,1\n",
        "sub-x.csv": b"7,8,0\n",  # '-' sorts before '/': checks the sort is by relpath string
        "\u00e9t\u00e9.csv": b"9,9,1\n",  # JSON escapes non-ASCII names
    }
    for relpath, content in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(content)
    # What DVC leaves out: .git, .hg and .dvc folders at any depth, a .git file, empty folders.
    for ignored in (".git/config", ".dvc/cache/ab/cdef", "sub/.hg/store", "sub/deeper/.git"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(b"ignored")
    (root / "empty" / "nested").mkdir(parents=True)
    return files


def test_folder_hash_follows_dvcs_directory_format(tmp_path: Path) -> None:
    files = make_tree(tmp_path)
    # DVC's .dir object: a JSON list of {"md5", "relpath"} sorted by relpath, written by json.dumps with
    # sorted keys and its default ", " and ": " separators, non-ASCII escaped; its md5 plus ".dir".
    order = ["b.csv", "sub-x.csv", "sub/c.npz", "sub/deeper/d.csv", "\u00e9t\u00e9.csv"]
    names = {"\u00e9t\u00e9.csv": "\\u00e9t\\u00e9.csv"}
    listing = "[" + ", ".join(
        f'{{"md5": "{md5(files[relpath])}", "relpath": "{names.get(relpath, relpath)}"}}' for relpath in order
    ) + "]"
    assert lineage.dvc_dir_listing(tmp_path) == listing.encode()
    assert hash_of(tmp_path) == f"md5:{md5(listing.encode())}.dir"


def test_empty_folder_has_dvcs_empty_directory_hash(tmp_path: Path) -> None:
    assert hash_of(tmp_path) == "md5:d751713988987e9331980363e24189ce.dir"  # md5 of "[]"


def test_folder_hash_changes_with_content_and_names_not_with_ignored_files(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = hash_of(tmp_path)
    (tmp_path / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    (tmp_path / "empty" / "another").mkdir()
    assert hash_of(tmp_path) == before
    (tmp_path / "sub" / "c.npz").write_bytes(b"\x00\x01binarY")
    changed = hash_of(tmp_path)
    assert changed != before
    (tmp_path / "sub" / "c.npz").rename(tmp_path / "sub" / "c2.npz")
    renamed = hash_of(tmp_path)
    assert renamed not in (before, changed)


def test_builtin_digits_hash_is_stable_and_ignores_fraction() -> None:
    first = lineage.data_hash(parse_source("sklearn:digits"))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    int(first.removeprefix("sha256:"), 16)
    assert lineage.data_hash(parse_source("sklearn:digits?fraction=0.3")) == first


def test_missing_data_is_a_data_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=str(missing)):
        hash_of(missing)


PARAMS: dict[str, object] = {
    "stage": "warmup",
    "data": "sklearn:digits?fraction=0.3",
    "epochs": 6,
    "learning_rate": 0.003,
    "weight_decay": 1e-05,  # YAML 1.1 reads a bare 1e-05 as a string
    "big": 1e16,
    "negative": -2.5,
    "init_from": None,
    "mixed_precision": True,
    "optimizer": "no",  # would be false unquoted
    "looks_numeric": "1e-05",
    "tricky": 'a: b # "c" \\ \t\n\u2028 \u00e9 \x7f \U0001f600',
    "empty": "",
    "hidden_units": [128, 64],
    "yes": "key that YAML 1.1 reads as a boolean",
    "workers": 2,
}


def test_params_yaml_parses_back_to_the_params_in_order(tmp_path: Path) -> None:
    lineage.write_dvc_files(str(tmp_path), {**PARAMS, "not_a_number": math.nan, "infinite": -math.inf})
    loaded = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
    assert list(loaded) == [*PARAMS, "not_a_number", "infinite"]
    assert {key: loaded[key] for key in PARAMS} == PARAMS
    assert all(type(loaded[key]) is type(value) for key, value in PARAMS.items() if value is not None)
    assert math.isnan(loaded["not_a_number"]) and loaded["infinite"] == -math.inf


def test_dvc_yaml_declares_metrics_and_params(tmp_path: Path) -> None:
    lineage.write_dvc_files(str(tmp_path), {"epochs": 1})
    assert yaml.safe_load((tmp_path / "dvc.yaml").read_text(encoding="utf-8")) == {
        "metrics": ["metrics.json"],
        "params": ["params.yaml"],
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]  # no temp files left


def test_unwritable_output_is_transient_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "output"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(TransientError, match=str(blocker / "params.yaml")):
        lineage.write_dvc_files(str(blocker), {"epochs": 1})
