"""The reference model server, run as a real subprocess on a free loopback port."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrelease_trainer import cli, data, export
from modelrelease_trainer.exit_codes import DataError
from modelrelease_trainer.serving import ModelLocation, locate_model
from modelrelease_trainer.sources import parse_source

from .helpers import Run, ServerProcess, clean_env

NAME = "digits"
FAMILIES = ("modelserver_requests", "modelserver_request_duration_seconds", "modelserver_prediction_confidence",
            "modelserver_feedback")


@pytest.fixture(scope="module")
def server(stage1: Run) -> Iterator[ServerProcess]:
    # The name comes from a flag, the track from the environment: flags and env both reach the server.
    process = ServerProcess("--model", str(stage1.output), "--name", NAME, env=clean_env(RELEASE_TRACK="canary"))
    yield process
    assert process.stop() == 0  # SIGTERM shuts down cleanly


@pytest.fixture(scope="module")
def eval_split() -> data.Split:
    return data.split_dataset(data.load_source(parse_source("sklearn:digits")), seed=7, eval_fraction=0.2)


def predict(server: ServerProcess, rows: Any, name: str = NAME) -> tuple[int, Any]:
    return server.request("POST", f"/v1/models/{name}:predict", {"instances": rows})


def feedback(server: ServerProcess, request_id: str, labels: list[int]) -> tuple[int, Any]:
    return server.request("POST", f"/v1/models/{NAME}:feedback", {"requestId": request_id, "labels": labels})


def samples(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = server.request("GET", "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items())


def test_probes_and_status(server: ServerProcess, stage1: Run) -> None:
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})
    assert server.request("GET", "/readyz") == (200, {"status": "ready"})
    status, body = server.request("GET", f"/v1/models/{NAME}")
    assert status == 200
    assert body["model_version_status"] == [
        {"version": stage1.result["version"], "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]


def test_predictions_equal_model_predict(server: ServerProcess, stage1: Run, eval_split: data.Split) -> None:
    rows = eval_split.x_eval[:50]
    status, body = predict(server, rows.tolist())
    assert status == 200 and len(body["requestId"]) == 36
    model = keras.saving.load_model(stage1.output / "model.keras", compile=False)
    expected = model.predict(rows, verbose=0)
    np.testing.assert_allclose(np.array(body["predictions"]), expected, rtol=1e-5, atol=1e-6)
    assert body["classes"] == expected.argmax(axis=1).tolist()
    accuracy = np.mean(np.array(body["classes"]) == eval_split.y_eval[:50])
    assert accuracy > 0.8


def test_metrics_carry_model_version_and_track(server: ServerProcess, stage1: Run) -> None:
    assert predict(server, [[0.0] * 64])[0] == 200
    _, text = server.request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {"model": NAME, "version": stage1.result["version"], "track": "canary"}
    assert families["modelserver_requests"].type == "counter"
    assert families["modelserver_request_duration_seconds"].type == "histogram"
    assert families["modelserver_prediction_confidence"].type == "histogram"
    assert families["modelserver_feedback"].type == "counter"
    for name in FAMILIES:
        for sample in families[name].samples:
            assert {k: sample.labels[k] for k in expected} == expected, sample
    names = {s.name for s in families["modelserver_requests"].samples}
    assert "modelserver_requests_total" in names
    codes = {s.labels["code"] for s in families["modelserver_requests"].samples if s.name.endswith("_total")}
    assert {"200", "500"} <= codes
    buckets = [float(s.labels["le"]) for s in families["modelserver_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"]
    assert buckets[0] == 0.001 and buckets[-1] == 10.0 and len(buckets) >= 15
    confidence = [s.labels["le"] for s in families["modelserver_prediction_confidence"].samples
                  if s.name.endswith("_bucket")]
    assert confidence[:3] == ["0.1", "0.15", "0.2"] and "1.0" in confidence


def test_feedback_moves_the_counters(server: ServerProcess, eval_split: data.Split) -> None:
    rows, truth = eval_split.x_eval[:40], eval_split.y_eval[:40].tolist()
    status, body = predict(server, rows.tolist())
    assert status == 200
    right = sum(int(p == t) for p, t in zip(body["classes"], truth, strict=True))
    assert right > 30
    before = samples(server)
    status, answer = feedback(server, body["requestId"], truth)
    assert status == 200 and answer["correct"] == right and answer["incorrect"] == 40 - right
    after = samples(server)
    for outcome, moved in (("correct", right), ("incorrect", 40 - right)):
        delta = value(after, "modelserver_feedback_total", outcome=outcome) - value(
            before, "modelserver_feedback_total", outcome=outcome)
        assert delta == moved
    # Deliberately wrong labels count as incorrect.
    _, body = predict(server, rows[:5].tolist())
    wrong = [(c + 1) % 10 for c in body["classes"]]
    assert feedback(server, body["requestId"], wrong) == (
        200, {"requestId": body["requestId"], "correct": 0, "incorrect": 5}
    )
    # A prediction is scored once.
    again = feedback(server, body["requestId"], wrong)
    assert again[0] == 404 and "already scored" in again[1]["error"]


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        (f"/v1/models/{NAME}:predict", b"{not json", 400, "not valid JSON"),
        (f"/v1/models/{NAME}:predict", b"[1, 2]", 400, "JSON object"),
        (f"/v1/models/{NAME}:predict", b'{"inputs": [[1]]}', 400, "instances"),
        (f"/v1/models/{NAME}:predict", b'{"instances": []}', 400, "instances"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2, 3]]}', 400, "shape [1, 3]"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[1, 2], [3]]}', 400, "differ in length"),
        (f"/v1/models/{NAME}:predict", json.dumps({"instances": [["a"] * 64]}).encode(), 400, "numbers"),
        (f"/v1/models/{NAME}:predict", json.dumps({"instances": [[True] * 64]}).encode(), 400, "numbers"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[NaN' + b", 0" * 63 + b"]]}", 400, "NaN"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[1e300' + b", 0" * 63 + b"]]}", 400, "too large"),
        (f"/v1/models/{NAME}:predict", b'{"instances": [[' + b"0, " * 64 + b'0]] , "x": 1}', 400, "shape [1, 65]"),
        (f"/v1/models/{NAME}:predict", b"\xff\xfe", 400, "not valid JSON"),
        ("/v1/models/other:predict", b'{"instances": [[0]]}', 404, "unknown model 'other'"),
        (f"/v1/models/{NAME}:feedback", b'{"requestId": "nope", "labels": [1]}', 404, "unknown requestId"),
        (f"/v1/models/{NAME}:feedback", b'{"requestId": "x", "labels": ["1"]}', 400, "labels"),
        (f"/v1/models/{NAME}:feedback", b'{"labels": [1]}', 400, "requestId"),
        ("/v2/elsewhere", b"{}", 404, "no route"),
    ],
)
def test_client_mistakes_get_4xx_json(
    server: ServerProcess, path: str, payload: bytes, status: int, needle: str
) -> None:
    got, body = server.request("POST", path, raw=payload)
    assert got == status and needle in body["error"], body


def test_wrong_methods_and_feedback_length(server: ServerProcess) -> None:
    assert server.request("GET", f"/v1/models/{NAME}:predict")[0] == 405
    assert server.request("POST", "/healthz", raw=b"{}")[0] == 405
    assert server.request("DELETE", f"/v1/models/{NAME}") == (405, {"error": "use GET here"})
    _, body = predict(server, [[1.0] * 64, [2.0] * 64])
    got, error = feedback(server, body["requestId"], [1])
    assert got == 400 and "1 labels for a prediction of 2" in error["error"]


def test_keep_alive_survives_a_rejected_body(server: ServerProcess) -> None:
    host, port = server.base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    good = json.dumps({"instances": [[0.0] * 64]})
    statuses = []
    # The unknown name is refused before its body is read; the server must not take that body
    # for the next request on the connection.
    for path in (f"/v1/models/{NAME}:predict", "/v1/models/other:predict", f"/v1/models/{NAME}:predict"):
        connection.request("POST", path, body=good)
        response = connection.getresponse()
        statuses.append(response.status)
        json.loads(response.read())
    connection.close()
    assert statuses == [200, 404, 200]


def test_fault_injection_is_off_by_default(server: ServerProcess) -> None:
    before = samples(server)
    statuses = [predict(server, [[3.0] * 64])[0] for _ in range(30)]
    assert statuses == [200] * 30
    after = samples(server)
    requests = "modelserver_requests_total"
    assert value(after, requests, code="500") == value(before, requests, code="500") == 0
    assert value(after, requests, code="200") - value(before, requests, code="200") == 30


def test_fault_injection_answers_500_to_a_share(stage1: Run) -> None:
    faulty = ServerProcess("--model", str(stage1.output), "--inject-error-rate", "0.3", "--inject-seed", "11",
                           env=clean_env(INJECT_LATENCY_MS="20"))
    try:
        statuses = [predict(faulty, [[3.0] * 64], name="model")[0] for _ in range(60)]
        failed = statuses.count(500)
        assert set(statuses) == {200, 500} and 5 <= failed <= 35
        found = samples(faulty)
        assert value(found, "modelserver_requests_total", code="500") == failed
        assert value(found, "modelserver_requests_total", code="200") == 60 - failed
        assert value(found, "modelserver_requests_total", track="stable", model="model") == 60
        # Every predict slept the injected 20 ms first: a lower bound that sleep guarantees.
        assert value(found, "modelserver_request_duration_seconds_sum") >= 60 * 0.020
    finally:
        assert faulty.stop() == 0


def test_unloadable_model_exits_65(tmp_path: Path) -> None:
    assert cli.main(["serve", "--model", str(tmp_path), "--host", "127.0.0.1", "--port", "0"]) == 65


@pytest.fixture(scope="module")
def exported(stage1: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like a stage's output but without model.keras: result.json and a SavedModel base path."""
    folder = tmp_path_factory.mktemp("exported")
    shutil.copy(stage1.output / "result.json", folder / "result.json")
    model = keras.saving.load_model(stage1.output / "model.keras", compile=False)
    export.export_saved_model(model, str(folder))
    return folder


def test_serves_a_savedmodel_base_path_like_the_keras_model(
    exported: Path, stage1: Run, eval_split: data.Split
) -> None:
    served = ServerProcess("--model", str(exported / "saved_model"), "--name", NAME)
    try:
        rows = eval_split.x_eval[:50]
        status, body = predict(served, rows.tolist())
        assert status == 200
        model = keras.saving.load_model(stage1.output / "model.keras", compile=False)
        expected = model.predict(rows, verbose=0)
        assert body["classes"] == expected.argmax(axis=1).tolist()
        np.testing.assert_allclose(np.array(body["predictions"]), expected, rtol=1e-5, atol=1e-6)
        # The base path sits in the stage's folder, so the version is the one the trainer recorded.
        assert body["modelVersion"] == stage1.result["version"]
        assert predict(served, [[1.0] * 63])[0] == 400  # the width comes from the signature
    finally:
        assert served.stop() == 0


def make_version(base: Path, name: str) -> Path:
    (base / name).mkdir(parents=True)
    (base / name / "saved_model.pb").write_bytes(b"")
    return base / name


def test_model_locations_resolve_as_documented(tmp_path: Path) -> None:
    artifact = tmp_path / "stage"
    make_version(artifact / "saved_model", "1")
    # An artifact folder without model.keras serves its SavedModel; with one, model.keras as before.
    assert locate_model(str(artifact)) == ModelLocation("saved_model", artifact / "saved_model" / "1", artifact)
    (artifact / "model.keras").write_bytes(b"")
    assert locate_model(str(artifact)) == ModelLocation("keras", artifact / "model.keras", artifact)
    assert locate_model(str(artifact / "model.keras")).kind == "keras"
    # A base path loads its highest integer version (10 > 9, numerically), ignoring other names.
    base = tmp_path / "models"
    for name in ("2", "9", "10", ".11.tmp", "latest"):
        make_version(base, name)
    assert locate_model(str(base)) == ModelLocation("saved_model", base / "10", base)
    assert locate_model(str(artifact / "saved_model" / "1")).artifact_folder == artifact
    assert locate_model(str(base / "9")) == ModelLocation("saved_model", base / "9", base / "9")


def test_model_locations_without_a_model_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path} has neither model.keras nor a SavedModel"):
        locate_model(str(tmp_path))
    (tmp_path / "3").mkdir()  # a version folder still being written, or broken
    make_version(tmp_path, "2")
    with pytest.raises(DataError, match=f"highest version folder {tmp_path / '3'} has no saved_model.pb"):
        locate_model(str(tmp_path))


def test_unloadable_savedmodel_exits_65(tmp_path: Path) -> None:
    make_version(tmp_path / "saved_model", "1")  # an empty saved_model.pb
    assert cli.main(["serve", "--model", str(tmp_path), "--host", "127.0.0.1", "--port", "0"]) == 65
