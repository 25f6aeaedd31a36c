"""Lineage of a model version: which data it was trained on, and files that let DVC compare versions.

data_hash() names the training data by content, in the form DVC records it, so a version folder can be
traced to the exact data a `dvc add` or `dvc status` in the data repository would report:

  a file       "md5:" + the MD5 of its raw bytes (DVC 3's "md5" hash; no line-ending conversion)
  a folder     "md5:" + the MD5 of DVC's directory listing, then ".dir": the listing is the JSON list of
               {"md5": <file's md5>, "relpath": <posix path below the folder>}, one entry per file at any
               depth, sorted by relpath, serialised by json.dumps with sort_keys=True and its default
               separators (", " and ": ") and ASCII escapes. Like DVC, folders named .git, .hg or .dvc and
               files named .git are left out, and empty folders add nothing.
  built-in     "sha256:" + the SHA-256 of a format tag, then the loaded features and labels, each as
               "name|dtype|shape" and its bytes: a dataset bundled with a library has no file to hash.

write_dvc_files() writes params.yaml and a dvc.yaml that declares it and metrics.json at top level, so in a
repository holding several version folders `dvc params diff` and `dvc metrics diff` compare them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from modelrelease_trainer.artifact import METRICS_FILE
from modelrelease_trainer.exit_codes import DataError, TransientError
from modelrelease_trainer.sources import DataSource

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"
CHUNK_BYTES = 1 << 20
"""Files are hashed a chunk at a time, so a large data file never has to fit in memory."""
IGNORED_FOLDERS = frozenset({".git", ".hg", ".dvc"})
"""What DVC's default ignore rules leave out of a folder at any depth (plus a file named .git)."""
_HASH_PREFIX = b"modelrelease-data-v1\n"


def data_hash(source: DataSource) -> str:
    """The content hash of the data behind a --data source.

    The ?fraction= option does not change it: the fraction is a hyper-parameter of the split, recorded
    with the other parameters, while the hash names the data the split was drawn from.
    Raises DataError when the path is missing or cannot be read.
    """
    if source.kind == "sklearn":
        return _builtin_hash(source)
    path = Path(source.location)
    try:
        if path.is_dir():
            return f"md5:{_folder_md5(path)}.dir"
        if not path.exists():
            raise DataError(f"--data: {path} does not exist; check the path and the volume mount")
        return f"md5:{file_md5(path)}"
    except OSError as exc:
        raise DataError(f"--data: cannot read {exc.filename or path} to hash it ({exc.strerror or exc})") from None


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_dir_listing(folder: Path) -> bytes:
    """The bytes DVC hashes for a folder (its .dir object without sizes)."""
    entries = [{"md5": file_md5(path), "relpath": relpath} for relpath, path in _files_below(folder)]
    entries.sort(key=lambda entry: entry["relpath"])
    return json.dumps(entries, sort_keys=True).encode("utf-8")


def _folder_md5(folder: Path) -> str:
    return hashlib.md5(dvc_dir_listing(folder), usedforsecurity=False).hexdigest()


def _files_below(folder: Path) -> Iterator[tuple[str, Path]]:
    def raise_error(error: OSError) -> None:
        raise error  # an unreadable subfolder must not silently drop out of the hash

    for root, folders, files in os.walk(folder, onerror=raise_error):
        folders[:] = [name for name in folders if name not in IGNORED_FOLDERS]
        base = Path(root)
        for name in files:
            if name == ".git":  # a worktree's or submodule's pointer file
                continue
            path = base / name
            yield path.relative_to(folder).as_posix(), path


def _builtin_hash(source: DataSource) -> str:
    from modelrelease_trainer.data import load_source

    dataset = load_source(source)  # the whole dataset: ?fraction= only applies to the split
    digest = hashlib.sha256(_HASH_PREFIX)
    for name, array in (("x", dataset.x), ("y", dataset.y)):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{name}|{contiguous.dtype.str}|{contiguous.shape}\n".encode())
        digest.update(contiguous.tobytes())
    return "sha256:" + digest.hexdigest()


def write_dvc_files(output: str, params: dict[str, object]) -> None:
    """Write params.yaml (keys in the given order) and dvc.yaml into the artifact folder.

    Raises TransientError naming the file when it cannot be written.
    """
    _write_text(Path(output) / PARAMS_FILE, to_yaml(params))
    _write_text(
        Path(output) / DVC_FILE,
        "# Declares this version's metrics and parameters, so `dvc metrics diff` and `dvc params diff`\n"
        "# compare version folders.\n" + to_yaml({"metrics": [METRICS_FILE], "params": [PARAMS_FILE]}),
    )


def _write_text(target: Path, text: str) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise TransientError(f"--output: cannot write {target} ({exc}); check the artifact volume") from None


# YAML by hand: the trainer image does not install PyYAML. Output is block style; every value is written so
# that YAML 1.1 (PyYAML) and YAML 1.2 (ruamel, which DVC uses) read back the same type and value.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}


def to_yaml(value: Mapping[str, object]) -> str:
    """A mapping of scalars (str, int, float, bool, None), lists and nested mappings as a YAML document."""
    if not value:
        return "{}\n"
    return "".join(line + "\n" for line in _mapping_lines(value, 0))


def _mapping_lines(mapping: Mapping[str, object], indent: int) -> Iterator[str]:
    pad = " " * indent
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"params keys must be strings, got {key!r}")
        name = key if _PLAIN_KEY.fullmatch(key) and key.lower() not in _RESERVED else _quoted(key)
        if isinstance(item, Mapping) and item:
            yield f"{pad}{name}:"
            yield from _mapping_lines(item, indent + 2)
        elif isinstance(item, (list, tuple)) and item:
            yield f"{pad}{name}:"
            yield from _sequence_lines(item, indent + 2)
        else:
            yield f"{pad}{name}: {_scalar(item)}"


def _sequence_lines(items: list[object] | tuple[object, ...], indent: int) -> Iterator[str]:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            lines = list(_mapping_lines(item, indent + 2))
            yield f"{pad}- {lines[0].lstrip()}"
            yield from lines[1:]
        elif isinstance(item, (list, tuple)) and item:
            lines = list(_sequence_lines(item, indent + 2))
            yield f"{pad}- {lines[0].lstrip()}"
            yield from lines[1:]
        else:
            yield f"{pad}- {_scalar(item)}"


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _float(float(value))
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    raise TypeError(f"params values must be str, int, float, bool, None, lists or mappings, got {value!r}")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    # YAML 1.1 reads "1e-05" as a string: it wants a dot in the mantissa and a sign in the exponent.
    if "." not in mantissa:
        mantissa += ".0"
    if e and exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + (f"e{exponent}" if e else "")


def _quoted(text: str) -> str:
    """A double-quoted YAML scalar; anything that is not plainly printable is escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif 0x20 <= code <= 0x7E or (0xA0 <= code <= 0xD7FF and char not in "\u2028\u2029") or (
            0xE000 <= code <= 0xFFFD and code != 0xFEFF
        ) or code >= 0x10000:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")  # line separators, BOM, lone surrogates
    return '"' + "".join(out) + '"'
