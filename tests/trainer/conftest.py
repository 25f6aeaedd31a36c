"""Session fixtures: train each stage once (real TensorFlow on CPU) and reuse the results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import DIGITS_30, DIGITS_60, FAST, Run, TrainerProcess, start_workers, stop_all, train


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


@pytest.fixture(scope="session")
def stage1(workdir: Path) -> Run:
    run = train(workdir, "warmup", "--data", DIGITS_30, "--optimizer", "adam", *FAST)
    assert run.exit_code == 0, run.result
    return run


@pytest.fixture(scope="session")
def stage2(workdir: Path, stage1: Run) -> Run:
    run = train(workdir, "grow", "--data", DIGITS_60, "--init-from", str(stage1.output), "--optimizer", "adamw",
                "--weight-decay", "0.0001", *FAST)
    assert run.exit_code == 0, run.result
    return run


@dataclass(frozen=True)
class WorkerPair:
    chief: TrainerProcess
    worker: TrainerProcess
    exit_codes: tuple[int, int]
    output: Path
    """The chief's --output."""
    worker_output: Path
    """Worker 1's --output: a folder of its own here, so the test can see that it stays unwritten."""


@pytest.fixture(scope="session")
def pair(workdir: Path) -> WorkerPair:
    """stage1's training on two workers (TF_CONFIG on loopback ports), in two real processes."""
    output, worker_output = workdir / "pair", workdir / "pair-worker-1"
    processes = start_workers(workdir, "pair", [output, worker_output], "--data", DIGITS_30, "--optimizer", "adam",
                              *FAST)
    try:
        codes = (processes[0].wait(), processes[1].wait())
    finally:
        stop_all(processes)
    return WorkerPair(chief=processes[0], worker=processes[1], exit_codes=codes, output=output,
                      worker_output=worker_output)


# Keras' own .keras saving trips a NumPy 2 deprecation inside Keras; it is not ours to fix, so keep it out
# of this suite's report.
_KERAS_NUMPY_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(_KERAS_NUMPY_WARNING))
