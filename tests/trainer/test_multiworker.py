"""Training one stage on several workers: real trainer processes on loopback ports, and how a worker finds
its cluster (TF_CONFIG, or TRAINER_WORKER_HOSTS with JOB_COMPLETION_INDEX)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelrelease_trainer import exit_codes
from modelrelease_trainer.distributed import Cluster, export_tf_config, resolve_cluster
from modelrelease_trainer.exit_codes import ConfigError
from modelrelease_trainer.result import load_result

from .conftest import WorkerPair
from .helpers import DIGITS_30, FAST, Run, TrainerProcess, loopback_addresses, tf_config, train

HOSTS = ["w0.stage.ns.svc:2222", "w1.stage.ns.svc:2222"]


def test_two_workers_train_the_stage_like_one(pair: WorkerPair, stage1: Run) -> None:
    assert pair.exit_codes == (0, 0), pair.chief.log()[-3000:] + pair.worker.log()[-3000:]
    chief = load_result(pair.chief.termination_log.read_text())
    assert chief["ok"] is True and chief["workers"] == 2
    assert (chief["epochsRun"], chief["resumedFromEpoch"]) == (6, 0)
    assert chief["dataHash"] == stage1.result["dataHash"]
    # The same data, seed and global batch: the gradient sum over two workers is one worker's gradient.
    assert chief["metrics"]["accuracy"] > 0.85
    assert abs(chief["metrics"]["accuracy"] - stage1.result["metrics"]["accuracy"]) <= 0.05
    assert chief["metrics"]["samples"] == stage1.result["metrics"]["samples"]
    assert chief["metrics"]["trainSamples"] == stage1.result["metrics"]["trainSamples"]


def test_every_worker_reports_the_same_model(pair: WorkerPair) -> None:
    chief, worker = pair.chief.result(), load_result(pair.worker.termination_log.read_text())
    assert worker["ok"] is True and worker["workers"] == 2
    for field in ("version", "metrics", "dataHash", "epochsRun", "resumedFromEpoch"):
        assert worker[field] == chief[field], field
    # Each worker prints its progress for the pod log.
    for process in (pair.chief, pair.worker):
        assert [f"Epoch {n}/6" for n in range(1, 7)] == [
            line for line in process.log().splitlines() if line.startswith("Epoch ")
        ]


def test_only_the_chief_writes_the_artifact(pair: WorkerPair) -> None:
    assert not pair.worker_output.exists()
    names = sorted(p.name for p in pair.output.iterdir())
    assert names == ["checkpoint", "dvc.yaml", "metrics.json", "model.keras", "params.yaml", "result.json",
                     "saved_model", "tensorboard"]
    assert json.loads((pair.output / "result.json").read_text()) == pair.chief.result()
    params = yaml.safe_load((pair.output / "params.yaml").read_text())
    assert params["workers"] == 2 and params["stage"] == "pair"


def test_workers_must_match_the_cluster_from_the_command_line(tmp_path: Path) -> None:
    # No cluster at all.
    alone = TrainerProcess(tmp_path, "alone", "--stage", "s", "--data", DIGITS_30, "--output", str(tmp_path / "a"),
                           "--workers", "2")
    assert alone.wait() == exit_codes.CONFIG_ERROR
    error = load_result(alone.termination_log.read_text())["error"]
    assert "--workers 2 needs TF_CONFIG, or TRAINER_WORKER_HOSTS and JOB_COMPLETION_INDEX" in error
    # A TF_CONFIG with three workers for --workers 2.
    three = TrainerProcess(tmp_path, "three", "--stage", "s", "--data", DIGITS_30, "--output", str(tmp_path / "b"),
                           "--workers", "2", env={"TF_CONFIG": tf_config([*HOSTS, "w2:2222"], 0)})
    assert three.wait() == exit_codes.CONFIG_ERROR
    error = load_result(three.termination_log.read_text())["error"]
    assert "TF_CONFIG" in error and "--workers is 2" in error
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_bad_cluster_fails_in_process_before_any_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_WORKER_HOSTS", ",".join(HOSTS))
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    run = train(tmp_path, "indexless", "--data", DIGITS_30, *FAST, "--workers", "2")
    assert run.exit_code == exit_codes.CONFIG_ERROR and "JOB_COMPLETION_INDEX" in run.result["error"]


# How a worker finds its cluster: pure parsing of the environment, table-driven.

def test_tf_config_gives_the_cluster() -> None:
    cluster = resolve_cluster(2, {"TF_CONFIG": tf_config(HOSTS, 1)})
    assert cluster == Cluster(workers=2, index=1, hosts=tuple(HOSTS), origin="TF_CONFIG")
    assert not cluster.is_chief and cluster.multi_worker


def test_tf_config_wins_over_the_indexed_job_variables() -> None:
    env = {"TF_CONFIG": tf_config(HOSTS, 0), "TRAINER_WORKER_HOSTS": "x:1,y:2", "JOB_COMPLETION_INDEX": "1"}
    assert resolve_cluster(2, env).origin == "TF_CONFIG"


def test_indexed_job_variables_build_tf_config() -> None:
    env = {"TRAINER_WORKER_HOSTS": " , ".join(HOSTS), "JOB_COMPLETION_INDEX": "1"}
    cluster = resolve_cluster(2, env)
    assert (cluster.index, cluster.hosts, cluster.origin) == (1, tuple(HOSTS), "TRAINER_WORKER_HOSTS")
    target: dict[str, str] = {}
    export_tf_config(cluster, target)
    assert json.loads(target["TF_CONFIG"]) == {"cluster": {"worker": HOSTS}, "task": {"type": "worker", "index": 1}}


def test_one_worker_needs_no_cluster() -> None:
    cluster = resolve_cluster(1, {})
    assert (cluster.workers, cluster.index, cluster.hosts, cluster.is_chief) == (1, 0, (), True)
    target: dict[str, str] = {}
    export_tf_config(cluster, target)
    assert target == {}  # a single worker trains locally, whatever TF_CONFIG says


@pytest.mark.parametrize(
    ("workers", "env", "needles"),
    [
        (2, {}, ["--workers 2 needs TF_CONFIG", "Indexed Job"]),
        (2, {"TF_CONFIG": "{not json"}, ["TF_CONFIG is not JSON"]),
        (3, {"TF_CONFIG": tf_config(HOSTS, 0)}, ["TF_CONFIG cluster.worker lists 2 workers", "--workers is 3"]),
        (2, {"TF_CONFIG": tf_config(HOSTS, 2)}, ["TF_CONFIG task.index", "0 to 1"]),
        (2, {"TF_CONFIG": json.dumps({"cluster": {"worker": HOSTS, "ps": ["p:1"]},
                                      "task": {"type": "worker", "index": 0}})}, ["TF_CONFIG has ps tasks"]),
        (2, {"TF_CONFIG": json.dumps({"cluster": {"worker": HOSTS}, "task": {"type": "chief", "index": 0}})},
         ["TF_CONFIG task.type"]),
        (2, {"TF_CONFIG": tf_config(["w0:2222", "w1"], 0)}, ["'w1' is not \"host:port\""]),
        (2, {"TRAINER_WORKER_HOSTS": HOSTS[0], "JOB_COMPLETION_INDEX": "0"},
         ["TRAINER_WORKER_HOSTS lists 1 workers but --workers is 2"]),
        (2, {"TRAINER_WORKER_HOSTS": ",".join(HOSTS)}, ["JOB_COMPLETION_INDEX is not", "Indexed Job"]),
        (2, {"TRAINER_WORKER_HOSTS": ",".join(HOSTS), "JOB_COMPLETION_INDEX": "2"}, ["JOB_COMPLETION_INDEX must be"]),
        (2, {"TRAINER_WORKER_HOSTS": ",".join(HOSTS), "JOB_COMPLETION_INDEX": "one"}, ["JOB_COMPLETION_INDEX must be"]),
        (2, {"TRAINER_WORKER_HOSTS": "w0:2222,w0:2222", "JOB_COMPLETION_INDEX": "0"}, ["twice"]),
        (2, {"TRAINER_WORKER_HOSTS": "w0:2222,w1:99999", "JOB_COMPLETION_INDEX": "0"}, ["port 1-65535"]),
        (65, {}, ["--workers must be an integer from 1 to 64"]),
    ],
)
def test_a_wrong_cluster_is_a_config_error_naming_the_variable(
    workers: int, env: dict[str, str], needles: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_cluster(workers, env)
    for needle in needles:
        assert needle in str(caught.value)


def test_a_worker_whose_peers_never_come_gives_up_and_says_why(tmp_path: Path) -> None:
    """TensorFlow would wait for a missing chief forever (deaf to SIGTERM): the start-up watchdog ends the
    process so the Job retries it, and the reason it left beforehand is the pod's termination message."""
    hosts = loopback_addresses(2)
    lonely = TrainerProcess(tmp_path, "lonely", "--stage", "s", "--data", DIGITS_30, "--output", str(tmp_path / "o"),
                            "--workers", "2", *FAST,
                            env={"TF_CONFIG": tf_config(hosts, 1), "TRAINER_STARTUP_TIMEOUT_SECONDS": "3"})
    assert lonely.wait() == exit_codes.UNEXPECTED  # retried by the Job, as every exit but 64 and 65
    result = load_result(lonely.termination_log.read_text())
    assert result["exitCode"] == exit_codes.TRANSIENT
    assert "worker 1 of 2: the workers did not all meet within 3 s" in result["error"]
    assert not (tmp_path / "o").exists()  # a worker that is not the chief writes nothing


def test_a_startup_timeout_that_is_not_a_number_is_a_config_error(tmp_path: Path) -> None:
    worker = TrainerProcess(tmp_path, "bad", "--stage", "s", "--data", DIGITS_30, "--output", str(tmp_path / "o"),
                            "--workers", "2", *FAST,
                            env={"TF_CONFIG": tf_config(loopback_addresses(2), 1),
                                 "TRAINER_STARTUP_TIMEOUT_SECONDS": "soon"})
    assert worker.wait() == exit_codes.CONFIG_ERROR
    assert "TRAINER_STARTUP_TIMEOUT_SECONDS must be a number of seconds" in load_result(
        worker.termination_log.read_text())["error"]
