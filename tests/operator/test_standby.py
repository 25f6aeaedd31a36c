"""Two operator replicas with leader election: only the Lease holder acts; a standby takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from modelrelease_local.ports import free_port
from tests.operator.conftest import Harness, release_spec
from tests.waiting import wait_for

LEASE = ("coordination.k8s.io/v1", "leases", "default", "model-release-operator")


def start_replica(harness: Harness, name: str, metrics_port: int) -> subprocess.Popen[bytes]:
    log = open(harness.logdir / f"replica-{name}.log", "wb")  # noqa: SIM115 - lives with the process
    env = {**os.environ, "KUBECONFIG": str(harness.kubeconfig), "POD_NAME": name, "POD_NAMESPACE": "default"}
    return subprocess.Popen(
        [sys.executable, "-m", "modelrelease", "run", "-A", "--leader-elect", "--leader-election-lease-duration", "3",
         "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def holder(harness: Harness) -> str | None:
    lease = harness.server.get_object(*LEASE)
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or None


def passes(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("modelrelease_reconcile_passes_total{"))


def test_only_the_leader_acts_and_a_standby_takes_over(harness: Harness) -> None:
    harness.kill_operator()  # the fixture's single operator; this test runs two replicas of its own
    ports = {"a": free_port(), "b": free_port()}
    replicas = {name: start_replica(harness, name, port) for name, port in ports.items()}
    try:
        leader = wait_for(lambda: holder(harness), "a replica to take the lease")
        standby = "b" if leader == "a" else "a"
        harness.apply("digits", release_spec(harness.prometheus.url))
        harness.wait_phase("digits", "Progressing")
        assert passes(ports[leader]) > 0
        assert passes(ports[standby]) == 0  # caches warm, nothing written

        os.killpg(replicas[leader].pid, signal.SIGKILL)
        replicas[leader].wait()
        killed = time.monotonic()
        wait_for(lambda: holder(harness) == standby, "the standby to take the lease over")
        print(f"takeover after {time.monotonic() - killed:.1f} s (lease duration 3 s)")

        status = harness.wait_phase("digits", "Released", timeout=180)
        assert passes(ports[standby]) > 0
        assert [r["phase"] for r in status["stages"]] == ["Succeeded"] * 3
        jobs = harness.jobs()
        assert len(jobs) == 3 and len({j.rsplit("-", 1)[0] for j in jobs}) == 3  # one Job per stage
        assert len(status["history"]) == 2 and status["history"][-1]["stage"] == "full"
        lease = harness.server.get_object(*LEASE) or {}
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        for process in replicas.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_stopped_leader_hands_the_lease_over_at_once(harness: Harness) -> None:
    harness.kill_operator()
    ports = {"a": free_port(), "b": free_port()}
    first = start_replica(harness, "a", ports["a"])
    try:
        wait_for(lambda: holder(harness) == "a", "the first replica to lead")
        second = start_replica(harness, "b", ports["b"])
        try:
            first.send_signal(signal.SIGTERM)  # a clean stop (rolling update): it gives the lease up
            first.wait(timeout=60)
            lease = wait_for(lambda: harness.server.get_object(*LEASE) if holder(harness) != "a" else None,
                             "the lease to be released")
            assert lease["spec"]["holderIdentity"] in ("", "b")
            wait_for(lambda: holder(harness) == "b", "the second replica to lead")
        finally:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
