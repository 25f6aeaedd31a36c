"""Data sources, file formats, the deterministic split and the tf.data pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrelease_trainer import data
from modelrelease_trainer.exit_codes import ConfigError, DataError
from modelrelease_trainer.sources import parse_source


def load(text: str) -> data.Dataset:
    return data.load_source(parse_source(text))


def rows(split: data.Split) -> set[bytes]:
    return {row.tobytes() + bytes([label]) for row, label in zip(split.x_train, split.y_train, strict=True)}


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return load("sklearn:digits")


def test_sources_parse() -> None:
    assert parse_source("sklearn:digits?fraction=0.3").fraction == 0.3
    assert parse_source("sklearn:digits").fraction == 1.0
    assert parse_source("/data/a:b.csv").location == "/data/a:b.csv"
    assert parse_source("file:///data/x.npz?fraction=0.5").location == "/data/x.npz"
    assert parse_source("train.csv").kind == "path"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gs://bucket/x.npz", "unknown scheme"),
        ("sklearn:digits?fraction=0", "fraction"),
        ("sklearn:digits?fraction=abc", "fraction"),
        ("sklearn:digits?fraction=0.2&fraction=0.3", "twice"),
        ("sklearn:digits?limit=3", "unknown option"),
        ("sklearn:iris", "unknown sklearn dataset"),
        ("", "empty"),
    ],
)
def test_bad_sources_are_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_source(text)


def test_digits_shape(digits: data.Dataset) -> None:
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.y.dtype == np.int64 and set(digits.y.tolist()) == set(range(10))


def test_eval_split_is_the_same_for_every_fraction_and_training_grows(digits: data.Dataset) -> None:
    small = data.split_dataset(digits, seed=3, eval_fraction=0.2, fraction=0.3)
    large = data.split_dataset(digits, seed=3, eval_fraction=0.2, fraction=0.6)
    full = data.split_dataset(digits, seed=3, eval_fraction=0.2, fraction=1.0)
    np.testing.assert_array_equal(small.x_eval, large.x_eval)
    np.testing.assert_array_equal(small.y_eval, full.y_eval)
    assert rows(small) < rows(large) < rows(full)
    assert len(full.y_train) + len(full.y_eval) == len(digits.y)
    assert not rows(full) & {r.tobytes() + bytes([y]) for r, y in zip(full.x_eval, full.y_eval, strict=True)}
    # Every class is in both splits, in about the asked proportion.
    assert np.bincount(small.y_eval).min() >= 30 and np.bincount(small.y_train).min() >= 40
    assert abs(len(small.y_eval) / len(digits.y) - 0.2) < 0.01


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), low=st.floats(0.05, 1.0), high=st.floats(0.05, 1.0))
def test_fraction_superset_property(digits: data.Dataset, seed: int, low: float, high: float) -> None:
    low, high = sorted((low, high))
    a = data.split_dataset(digits, seed=seed, eval_fraction=0.2, fraction=low)
    b = data.split_dataset(digits, seed=seed, eval_fraction=0.2, fraction=high)
    assert rows(a) <= rows(b)
    np.testing.assert_array_equal(a.y_eval, b.y_eval)


def test_split_depends_on_seed(digits: data.Dataset) -> None:
    a = data.split_dataset(digits, seed=1, eval_fraction=0.2)
    b = data.split_dataset(digits, seed=2, eval_fraction=0.2)
    assert not np.array_equal(a.x_eval, b.x_eval)
    again = data.split_dataset(digits, seed=1, eval_fraction=0.2)
    np.testing.assert_array_equal(a.x_train, again.x_train)


def test_npz_csv_and_folder(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float64).reshape(6, 2, 2)  # images are flattened
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    (tmp_path / "b.csv").write_text("f1,f2,f3,f4,label\n1,2,3,4,1\n\n5,6,7,8.5,2.0\n")
    (tmp_path / "notes.txt").write_text("ignored")
    npz = load(str(tmp_path / "a.npz"))
    assert npz.x.shape == (6, 4) and npz.y.tolist() == y.tolist()
    csv = load(f"file:{tmp_path / 'b.csv'}")
    assert csv.x.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8.5]] and csv.y.tolist() == [1, 2]
    folder = load(str(tmp_path))
    assert folder.x.shape == (8, 4) and folder.y.tolist() == [*y.tolist(), 1, 2]


def test_csv_without_header(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("0.5,1\n1.5,0\n")
    assert load(str(tmp_path / "c.csv")).y.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bad.csv", "a,b,label\n1,2,3\n1,2\n", "line 3 has 2 columns"),
        ("bad.csv", "a,label\n1,cat\n", "line 2: label 'cat' is not an integer"),
        ("bad.csv", "a,label\n1,2.5\n", "not an integer"),
        ("bad.csv", "a,label\n1,-1\n", ">= 0"),
        ("bad.csv", "a,b,label\n1,x,2\n", "line 2 has a non-numeric feature"),
        ("bad.csv", "a,b,label\n", "no data rows"),
        ("bad.csv", "", "no data rows"),
        ("bad.csv", "1,nan,2\n", "NaN"),
        ("bad.npz", "not a zip", "cannot read"),
        ("bad.parquet", "x", "neither .npz nor .csv"),
    ],
)
def test_bad_files_are_data_errors(tmp_path: Path, name: str, content: str, needle: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=needle):
        load(str(tmp_path / name))


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": np.zeros((3, 2))}, "lacks array 'y'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "3 entries"),
        ({"x": np.zeros(3), "y": np.zeros(3)}, "2-D"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, "no samples"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1])}, "integers"),
        ({"x": np.array([["a", "b"]]), "y": np.array([1])}, "numbers"),
    ],
)
def test_bad_npz_contents(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=needle):
        load(str(tmp_path / "d.npz"))


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load(str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match=r"no \.npz or \.csv files"):
        load(str(tmp_path))


def test_folder_with_mismatched_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("1,2,0\n")
    (tmp_path / "b.csv").write_text("1,0\n")
    with pytest.raises(DataError, match="same columns"):
        load(str(tmp_path))


def test_too_little_data_for_an_eval_split() -> None:
    tiny = data.Dataset(x=np.zeros((2, 3), np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match="too few"):
        data.split_dataset(tiny, seed=0, eval_fraction=0.2)


def test_pipeline_batches_all_samples_in_a_seeded_order() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)

    def epochs(seed: int) -> list[list[int]]:
        pipeline = data.training_pipeline(x, y, batch_size=4, seed=seed)
        return [np.concatenate([b[1].numpy() for b in pipeline]).tolist() for _ in range(2)]

    first, second = epochs(5)
    assert sorted(first) == list(range(10)) and first != second  # reshuffled each epoch
    assert epochs(5) == [first, second]
    assert [len(b[1]) for b in data.training_pipeline(x, y, batch_size=4, seed=5)] == [4, 4, 2]
