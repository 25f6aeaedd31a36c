"""Parsing of --data strings. Pure: no file access, so the CLI parser can validate without side effects.

Accepted forms:
  /data/train.csv, ./train.npz, /data/folder   a file or a folder of .npz/.csv files, taken literally
  file:/data/train.csv?fraction=0.5           the same, with options
  sklearn:digits?fraction=0.3                 a dataset bundled with scikit-learn (no download)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from modelrelease_trainer.exit_codes import ConfigError

SKLEARN_DATASETS = ("digits",)
KNOWN_OPTIONS = ("fraction",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


@dataclass(frozen=True)
class DataSource:
    text: str
    """The --data string as given; reported back in the result's dataSource."""
    kind: str
    """"sklearn" or "path"."""
    location: str
    """The sklearn dataset name, or a filesystem path."""
    fraction: float = 1.0
    """Share of the training pool to use; the evaluation split never shrinks with it."""


def parse_source(text: str) -> DataSource:
    """Parse a --data value; raises ConfigError naming the problem and the fix."""
    if not text or not text.strip():
        raise ConfigError("--data is empty; give a file, a folder or sklearn:digits")
    match = _SCHEME.match(text)
    if match is None or text.startswith(("/", ".")):
        return DataSource(text=text, kind="path", location=text)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    location, _, query = rest.partition("?")
    fraction = _parse_options(query, text)
    if scheme == "sklearn":
        if location not in SKLEARN_DATASETS:
            known = ", ".join(f"sklearn:{name}" for name in SKLEARN_DATASETS)
            raise ConfigError(f"--data {text!r}: unknown sklearn dataset {location!r}; known: {known}")
        return DataSource(text=text, kind="sklearn", location=location, fraction=fraction)
    if scheme == "file":
        if location.startswith("//"):
            location = location[2:]  # file:///abs/path -> /abs/path (empty host)
        if not location:
            raise ConfigError(f"--data {text!r}: file: needs a path, e.g. file:/data/train.csv")
        return DataSource(text=text, kind="path", location=location, fraction=fraction)
    raise ConfigError(
        f"--data {text!r}: unknown scheme {scheme!r}; use a path, file:PATH or sklearn:digits "
        "(remote storage must be mounted into the pod as a volume)"
    )


def _parse_options(query: str, text: str) -> float:
    if not query:
        return 1.0
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ConfigError(f"--data {text!r}: cannot parse options {query!r}; write e.g. ?fraction=0.3") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in KNOWN_OPTIONS:
            raise ConfigError(f"--data {text!r}: unknown option {key!r}; known: {', '.join(KNOWN_OPTIONS)}")
        if key in options:
            raise ConfigError(f"--data {text!r}: option {key!r} is given twice")
        options[key] = value
    raw = options.get("fraction", "1")
    try:
        fraction = float(raw)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:  # also rejects nan
        raise ConfigError(f"--data {text!r}: fraction must be a number in (0, 1], got {raw!r}")
    return fraction
