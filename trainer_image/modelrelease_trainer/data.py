"""Loading, splitting and feeding training data.

The split is built so that stages stay comparable: the evaluation split is drawn from the full dataset
first (per class, by --seed and --eval-fraction only), then a ?fraction= of the remaining training pool
is taken as a per-class prefix of one seeded order. A larger fraction therefore grows the training set
(a superset of the smaller one) and never changes the evaluation split.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelrelease_trainer.exit_codes import DataError
from modelrelease_trainer.sources import DataSource

if TYPE_CHECKING:
    import tensorflow as tf

DATA_SUFFIXES = (".npz", ".csv")


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    """float32 features, one row per sample."""
    y: np.ndarray
    """int64 labels, 0..classes-1."""


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    """max label of the whole dataset + 1, so every fraction sees the same output width."""

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


def load_source(source: DataSource) -> Dataset:
    """Read all samples of a data source; raises DataError for missing, corrupt or ill-shaped data."""
    if source.kind == "sklearn":
        return _load_sklearn(source.location)
    path = Path(source.location)
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise DataError(f"--data: {path} does not exist; check the path and the volume mount")
    return _load_file(path)


def _load_sklearn(name: str) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, never downloads

    if name != "digits":  # sources.parse_source already rejects others
        raise DataError(f"--data: unknown sklearn dataset {name!r}")
    bunch = load_digits()
    return _checked(np.asarray(bunch.data), np.asarray(bunch.target), "sklearn:digits")


def _load_folder(folder: Path) -> Dataset:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise DataError(f"--data: folder {folder} has no .npz or .csv files")
    parts = [_load_file(p) for p in files]
    width = parts[0].x.shape[1]
    for path, part in zip(files, parts, strict=True):
        if part.x.shape[1] != width:
            raise DataError(
                f"--data: {path} has {part.x.shape[1]} features but {files[0]} has {width}; "
                "all files in a folder must have the same columns"
            )
    return Dataset(x=np.concatenate([p.x for p in parts]), y=np.concatenate([p.y for p in parts]))


def _load_file(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".csv":
        return _load_csv(path)
    raise DataError(f"--data: {path} is neither .npz nor .csv; convert it or rename it if it is one")


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise DataError(
                    f"--data: {path} lacks array {missing[0]!r} (it has {', '.join(archive.files) or 'none'}); "
                    "save features as x and labels as y"
                )
            x, y = archive["x"], archive["y"]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"--data: cannot read {path} as NPZ ({exc}); the file may be corrupt") from None
    return _checked(x, y, str(path))


def _load_csv(path: Path) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [(n, row) for n, row in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"--data: cannot read {path} as CSV ({exc})") from None
    if rows and not _all_numeric(rows[0][1]):
        rows = rows[1:]  # a header row
    if not rows:
        raise DataError(f"--data: {path} has no data rows")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(f"--data: {path} line {rows[0][0]} needs feature columns and a label column")
    features = np.empty((len(rows), width - 1), dtype=np.float64)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(f"--data: {path} line {line} has {len(row)} columns, expected {width}")
        try:
            features[i] = [float(cell) for cell in row[:-1]]
        except ValueError:
            raise DataError(f"--data: {path} line {line} has a non-numeric feature") from None
        labels[i] = _parse_label(row[-1], path, line)
    return _checked(features, labels, str(path))


def _all_numeric(row: list[str]) -> bool:
    try:
        for cell in row:
            float(cell)
    except ValueError:
        return False
    return True


def _parse_label(cell: str, path: Path, line: int) -> int:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not value.is_integer():  # nan and inf are not integers either
        raise DataError(
            f"--data: {path} line {line}: label {cell.strip()!r} is not an integer; "
            "the last column must be the class index"
        )
    return int(value)


def _checked(x: np.ndarray, y: np.ndarray, origin: str) -> Dataset:
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"--data: {origin} has no samples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"--data: {origin}: features must be numbers, got dtype {x.dtype}")
    if x.ndim == 1:
        raise DataError(f"--data: {origin}: features x must have one row per sample (2-D), got shape {x.shape}")
    x = x.reshape(len(x), -1)  # images (n, 8, 8) become rows of 64 features
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"--data: {origin}: labels y must be 1-D with {len(x)} entries, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
        raise DataError(f"--data: {origin}: labels must be integers (class indices)")
    if np.any(y < 0):
        raise DataError(f"--data: {origin}: labels must be >= 0 (class indices)")
    if not np.all(np.isfinite(x)):
        raise DataError(f"--data: {origin}: features contain NaN or infinity")
    return Dataset(x=x.astype(np.float32), y=y.astype(np.int64))


def split_dataset(dataset: Dataset, *, seed: int, eval_fraction: float, fraction: float = 1.0) -> Split:
    """Hold out a per-class share for evaluation, then take a per-class prefix of the training pool."""
    rng = np.random.default_rng(seed)
    eval_parts: list[np.ndarray] = []
    train_parts: list[np.ndarray] = []
    for label in np.unique(dataset.y):  # sorted, so the draw order depends on the data only
        members = rng.permutation(np.flatnonzero(dataset.y == label))
        # Keep at least one sample of each class for training; round half up.
        held_out = min(math.floor(eval_fraction * len(members) + 0.5), len(members) - 1)
        eval_parts.append(members[:held_out])
        pool = members[held_out:]
        train_parts.append(pool[: math.ceil(fraction * len(pool))])
    eval_index = np.sort(np.concatenate(eval_parts))
    train_index = np.concatenate(train_parts)
    if len(eval_index) == 0:
        raise DataError(
            f"--data: {len(dataset.y)} samples are too few to hold out --eval-fraction {eval_fraction}; "
            "add data or raise --eval-fraction"
        )
    return Split(
        x_train=dataset.x[train_index],
        y_train=dataset.y[train_index],
        x_eval=dataset.x[eval_index],
        y_eval=dataset.y[eval_index],
        num_classes=int(dataset.y.max()) + 1,
    )


def training_pipeline(x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int) -> tf.data.Dataset:
    """Cache once, reshuffle every epoch with a fixed seed, batch and prefetch."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    data = data.shuffle(buffer_size=len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def describe(split: Split) -> str:
    return (
        f"{len(split.y_train)} training and {len(split.y_eval)} evaluation samples, "
        f"{split.num_features} features, {split.num_classes} classes"
    )
