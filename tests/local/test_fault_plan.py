"""The embedded API's declarative fault plan, seen through the kubernetes client over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import kubernetes
import pytest

from modelrelease_local.apiserver import EmbeddedApiServer
from tests.waiting import wait_for


def test_a_429_carries_retry_after_in_the_header_and_the_status(server: EmbeddedApiServer,
                                                               core: kubernetes.client.CoreV1Api) -> None:
    (fault,) = server.faults.load({"faults": [
        {"kind": "error", "status": 429, "retryAfter": 1.5, "resource": "configmaps", "method": "POST"}]})
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.create_namespaced_config_map("ml", {"metadata": {"name": "c"}})
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "2"  # whole seconds, rounded up
    assert json.loads(info.value.body)["details"] == {"retryAfterSeconds": 2}
    assert fault.hits == 1 and fault.exhausted
    core.create_namespaced_config_map("ml", {"metadata": {"name": "c"}})  # once only


def test_served_faults_carry_the_write_out_and_answer_the_error(server: EmbeddedApiServer,
                                                                core: kubernetes.client.CoreV1Api) -> None:
    server.faults.load({"faults": [{"kind": "error", "status": 504, "served": True, "method": "POST"}]})
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.create_namespaced_config_map("ml", {"metadata": {"name": "kept"}})
    assert info.value.status == 504
    assert core.read_namespaced_config_map("kept", "ml").metadata.name == "kept"
    assert [(r.status, r.injected) for r in server.requests.filter("POST")] == [(504, True)]


def test_probability_follows_the_seed(server: EmbeddedApiServer, core: kubernetes.client.CoreV1Api) -> None:
    def failures() -> list[bool]:
        server.faults.clear()
        server.faults.load({"seed": 3, "faults": [
            {"kind": "error", "status": 500, "probability": 0.5, "times": None, "resource": "configmaps"}]})
        outcome = []
        for _ in range(20):
            try:
                core.list_namespaced_config_map("ml")
                outcome.append(False)
            except kubernetes.client.ApiException:
                outcome.append(True)
        return outcome

    first = failures()
    assert first == failures() and 0 < sum(first) < 20


def test_a_restart_refuses_everything_and_ends_open_watches(server: EmbeddedApiServer,
                                                           core: kubernetes.client.CoreV1Api) -> None:
    core.create_namespaced_config_map("ml", {"metadata": {"name": "c"}})
    ended = threading.Event()

    def watch() -> None:  # one watch request (the client's Watch would open another, and meet the 503)
        response = core.list_namespaced_config_map("ml", watch=True, resource_version="0", _preload_content=False,
                                                   _request_timeout=60)
        for _ in response:
            pass
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_for(lambda: any(r.is_watch for r in server.requests), "the watch to open")  # logged once it streams
    restart = server.faults.restart(30.0)
    wait_for(ended.is_set, "the watch to end", timeout=30)
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.read_namespaced_config_map("c", "ml")
    assert info.value.status == 503 and restart.hits == 2  # one stream ended, one request refused
    server.clear_faults()
    assert core.read_namespaced_config_map("c", "ml").metadata.name == "c"


def test_an_expired_watch_gets_an_error_event_with_410(server: EmbeddedApiServer,
                                                       core: kubernetes.client.CoreV1Api) -> None:
    events: list[dict] = []

    def watch() -> None:
        response = core.list_namespaced_config_map("ml", watch=True, _preload_content=False, _request_timeout=60)
        events.extend(json.loads(line) for line in response if line.strip())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_for(lambda: any(r.is_watch for r in server.requests), "the watch to open")  # logged once it streams
    (expiring,) = server.faults.load({"faults": [{"kind": "expireWatches", "resource": "configmaps"}]})
    thread.join(timeout=30)
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)] and expiring.hits == 1


@pytest.mark.parametrize(("plan", "words"), [
    ({"faults": [{"kind": "boom"}]}, "faults[0].kind: 'boom' is not a fault kind"),
    ({"faults": [{"kind": "error", "status": 200}]}, "faults[0].status: an HTTP error code"),
    ({"faults": [{"kind": "slow"}]}, "faults[0].delay: the seconds to wait"),
    ({"faults": [{"kind": "restart", "every": 3}]}, "faults[0]: every not known for kind restart"),
    ({"fault": []}, "fault not known; a plan has `seed` and `faults`"),
])
def test_a_plan_that_cannot_work_is_refused_naming_the_field(plan: dict, words: str) -> None:
    with pytest.raises(ValueError) as info:
        EmbeddedApiServer(faults=plan)
    assert words in str(info.value)


def test_the_command_line_takes_a_plan_file(tmp_path) -> None:
    plan = tmp_path / "faults.yaml"
    plan.write_text("faults:\n  - {kind: error, status: 503, pathSuffix: /namespaces, times: null}\n")
    process = subprocess.Popen([sys.executable, "-m", "modelrelease_local.apiserver", "--no-controllers",
                                "--faults", str(plan)], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()  # type: ignore[union-attr]
        api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        with pytest.raises(kubernetes.client.ApiException) as info:
            kubernetes.client.CoreV1Api(api).list_namespace()
        assert info.value.status == 503
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_up_refuses_a_bad_plan_before_it_starts_anything(tmp_path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("faults:\n  - kind: eror\n")
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "modelrelease_local", "--state-dir", str(state), "up",
                           "--faults", str(plan), "--no-traffic"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"--faults {plan}: faults[0].kind: 'eror' is not a fault kind" in done.stderr
    assert not state.exists()  # nothing was claimed, created or started
