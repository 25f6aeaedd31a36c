"""TensorFlow Serving: the tfserving-* presets on recorded series, the scrape config, the example release.

The series are written as TensorFlow Serving's Prometheus exporter writes them
(tensorflow_serving/util/prometheus_exporter.cc, metrics from tensorflow_serving/servables/tensorflow/
util.cc): '/' in a metric name becomes ':', a histogram has cumulative _bucket lines whose bounds are
printed with six significant digits and whose last bound is "+Inf", and latency is in microseconds. The
request counter counts every request, the readiness probes' GET /v1/models/<name> included (status
"OK"); the latency histogram only successful ones, with API "" for a status read. The scrape
configuration adds track and version. As in history_data, counters grow by whole numbers per 15 s step
and queries are evaluated at a step boundary over 60 s, so the expected values are exact.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelrelease.adapters.prometheus import PrometheusProvider
from modelrelease.api import parse_spec
from modelrelease.api.status import ModelVersion
from modelrelease.core.analysis import run_verdict
from modelrelease.core.measurement import ReleaseVariables
from modelrelease.manifests.serving import build_deployment
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import render, template_errors
from modelrelease_local.prometheus import PrometheusProcess, create_blocks_from_openmetrics
from tests.prometheus.analysis_helpers import analysis_spec, run_once
from tests.prometheus.conftest import provider_for

ROOT = Path(__file__).resolve().parents[2]
RELEASE_EXAMPLE = ROOT / "examples" / "tfserving-release.yaml"
SCRAPE_EXAMPLE = ROOT / "examples" / "tfserving-prometheus.yml"
TFSERVING = sorted(name for name in PRESETS if name.startswith("tfserving-"))

T0 = 1_704_067_200
STEP = 15
END = T0 + 900
EVALUATED_AT = T0 + 600
INTERVAL = 60
STEPS_PER_INTERVAL = INTERVAL // STEP
STABLE, CANARY, OLD_CANARY = ("sha256:" + c * 64 for c in "abc")
# monitoring::Buckets::Exponential(10, 1.8, 33) of request_latency, as the exporter prints the bounds.
LATENCY_BOUNDS = [format(10 * 1.8**i, ".6g") for i in range(33)] + ["+Inf"]
PROBE_MICROS = 100.0


@dataclass(frozen=True)
class Server:
    """One model version on one track: what its servers answered per 15 s step."""

    model: str
    track: str
    version: str
    predicts: tuple[tuple[str, str, int, float], ...] = ()
    """Successful requests: (API, entrypoint, count, latency in microseconds)."""
    errors: tuple[tuple[str, int], ...] = ()
    """Failed requests by status code name."""
    probes: int = 3
    """Successful status reads (GET /v1/models/<name>)."""


SERVERS = (
    Server("digits", "stable", STABLE, predicts=(("predict", "REST", 100, 5000.0),)),
    # 2 of 100 predict requests fail; 10 of the 98 answered take 15 ms, over gRPC ("Predict").
    Server("digits", "canary", CANARY, predicts=(("predict", "REST", 88, 5000.0), ("Predict", "GRPC", 10, 15000.0)),
           errors=(("INVALID_ARGUMENT", 1), ("INTERNAL", 1))),
    Server("digits", "canary", OLD_CANARY, predicts=(("predict", "REST", 50, 90000.0),), errors=(("INTERNAL", 50),)),
    Server("other", "canary", CANARY, predicts=(("predict", "REST", 10, 90000.0),), errors=(("INTERNAL", 90),)),
    Server("broken", "canary", CANARY, errors=(("FAILED_PRECONDITION", 20),)),  # every predict fails
    Server("quiet", "canary", CANARY),  # only the probes
)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _counter_lines(name: str, labels: dict[str, str], per_step: float) -> Iterator[str]:
    for step in range((END - T0) // STEP + 1):
        yield f"{name}{_labels(labels)} {per_step * step!r} {T0 + step * STEP}"


def openmetrics() -> str:
    # TensorFlow Serving types request_count "counter" in the text format, which needs no _total suffix;
    # OpenMetrics would, so the import declares it unknown (a type changes nothing PromQL computes).
    lines = ["# TYPE :tensorflow:serving:request_count unknown"]
    for s in SERVERS:
        scraped = {"track": s.track, "version": s.version}
        ok = sum(count for _, _, count, _ in s.predicts) + s.probes
        for status, count in (("OK", ok), *s.errors):
            lines += _counter_lines(":tensorflow:serving:request_count",
                                    {"model_name": s.model, "status": status, **scraped}, count)
    latency = ":tensorflow:serving:request_latency"
    lines.append(f"# TYPE {latency} histogram")
    for s in SERVERS:
        for api, entrypoint, count, micros in (*s.predicts, ("", "REST", s.probes, PROBE_MICROS)):
            labels = {"model_name": s.model, "API": api, "entrypoint": entrypoint, "track": s.track,
                      "version": s.version}
            for bound in LATENCY_BOUNDS:
                in_bucket = count if bound == "+Inf" or micros <= float(bound) else 0
                lines += _counter_lines(f"{latency}_bucket", {**labels, "le": bound}, in_bucket)
            lines += _counter_lines(f"{latency}_sum", labels, count * micros)
            lines += _counter_lines(f"{latency}_count", labels, count)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class Recorded:
    prometheus: PrometheusProcess
    provider: PrometheusProvider


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    workdir = tmp_path_factory.mktemp("prometheus-tfserving")
    source = workdir / "tfserving.om"
    source.write_text(openmetrics())
    create_blocks_from_openmetrics(source, workdir / "data")
    # The recorded blocks are far in the past; a long retention keeps them from being deleted.
    with PrometheusProcess(workdir, data_dir=workdir / "data", retention="100y") as prometheus:
        provider = provider_for(prometheus)
        yield Recorded(prometheus, provider)
        provider.close()


def _variables(model: str) -> ReleaseVariables:
    return ReleaseVariables("digits", "ml", model, CANARY, STABLE, timedelta(seconds=INTERVAL))


def _read(recorded: Recorded, template: str, model: str, track: str = "canary") -> float | None:
    version = CANARY if track == "canary" else STABLE
    result = recorded.provider.query(render(template, _variables(model).values(track, version)), time=EVALUATED_AT)
    assert result.ok, result.error
    return result.value


def _p99(buckets: Sequence[tuple[float, float]]) -> float:
    """histogram_quantile(0.99) by hand: linear inside the bucket that holds the 99th percentile."""
    rank, lower, below = 0.99 * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    raise AssertionError("no bucket holds the rank")


def test_the_presets_are_templates_promtool_accepts(tmp_path: Path) -> None:
    assert TFSERVING == ["tfserving-error-rate", "tfserving-latency-p99"]
    values = _variables("digits").values("canary", CANARY)
    rules = []
    for name in TFSERVING:
        preset = PRESETS[name]
        for kind, template in (("query", preset.query), ("samples", preset.sample_query),
                               ("buckets", preset.buckets_query)):
            if template is not None:
                assert template_errors(template) == [], (name, kind)
                rules.append({"record": f"check:{name.replace('-', '_')}:{kind}", "expr": render(template, values)})
    assert len(rules) == 5
    good, broken = tmp_path / "good.yml", tmp_path / "broken.yml"
    good.write_text(yaml.safe_dump({"groups": [{"name": "tfserving", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(good)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    # The check can fail: one parenthesis short is refused.
    short = {**rules[0], "expr": rules[0]["expr"][:-1]}
    broken.write_text(yaml.safe_dump({"groups": [{"name": "tfserving", "rules": [short]}]}))
    refused = subprocess.run(["promtool", "check", "rules", str(broken)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0


def test_error_rate_is_the_share_of_failed_requests_without_the_probes(recorded: Recorded) -> None:
    preset = PRESETS["tfserving-error-rate"]
    # 2 failures in 100 requests; the 3 probes per step would make it 2 / 103 if they counted.
    assert _read(recorded, preset.query, "digits") == pytest.approx(0.02)
    assert _read(recorded, preset.sample_query, "digits") == pytest.approx(100 * STEPS_PER_INTERVAL)
    assert _read(recorded, preset.query, "digits", "stable") == 0  # no error series at all: or vector(0)
    # A canary whose every predict fails reads 1, not "no data".
    assert _read(recorded, preset.query, "broken") == pytest.approx(1.0)
    assert _read(recorded, preset.sample_query, "broken") == pytest.approx(20 * STEPS_PER_INTERVAL)
    # Probes alone are no traffic: no samples, and 0 / 0 reads as no data.
    assert _read(recorded, preset.sample_query, "quiet") == 0
    assert _read(recorded, preset.query, "quiet") is None


def test_latency_p99_is_in_seconds_over_predict_requests_only(recorded: Recorded) -> None:
    preset = PRESETS["tfserving-latency-p99"]
    bounds = [float(b) for b in LATENCY_BOUNDS]
    canary = [(b, (88 if b >= 5000 else 0) + (10 if b >= 15000 else 0)) for b in bounds]
    stable = [(b, 100 if b >= 5000 else 0) for b in bounds]
    # 97.02 of 98 answers: 9.02 of the 10 slow ones into the bucket (11568.3, 20823] microseconds.
    assert _p99(canary) == pytest.approx(11568.3 + (20823 - 11568.3) * 9.02 / 10)
    assert _read(recorded, preset.query, "digits") == pytest.approx(_p99(canary) / 1e6)
    assert _read(recorded, preset.query, "digits", "stable") == pytest.approx(_p99(stable) / 1e6)
    assert _read(recorded, preset.sample_query, "digits") == pytest.approx(98 * STEPS_PER_INTERVAL)
    assert _read(recorded, preset.query, "broken") is None  # no predict was answered


def test_the_bucket_query_returns_tensorflow_servings_bounds(recorded: Recorded) -> None:
    query = render(PRESETS["tfserving-latency-p99"].buckets_query or "", _variables("digits").values("canary", CANARY))
    answer = recorded.provider.query_buckets(query, time=EVALUATED_AT)
    assert answer.ok and answer.buckets is not None
    assert [bound for bound, _ in answer.buckets] == [float(b) for b in LATENCY_BOUNDS]
    counts = dict(answer.buckets)
    assert counts[float("6426.84")] == 88 * STEPS_PER_INTERVAL and counts[math.inf] == 98 * STEPS_PER_INTERVAL


@pytest.mark.parametrize(("model", "expected", "verdict"), [
    ("digits", {"errors": ("Pass", "within bounds"), "latency": ("Fail", "canary/stable 3.11 > 1.2")}, "Fail"),
    ("broken", {"errors": ("Fail", "1 > 0.05"), "latency": ("Inconclusive", "waiting for traffic: 0 samples, need 20")},
     "Fail"),
    ("quiet", {"errors": ("Inconclusive", "waiting for traffic: 0 samples, need 20"),
               "latency": ("Inconclusive", "waiting for traffic: 0 samples, need 20")}, "Inconclusive"),
])
def test_an_analysis_run_judges_tensorflow_serving(recorded: Recorded, model: str,
                                                    expected: dict[str, tuple[str, str]], verdict: str) -> None:
    checks = [{"name": "errors", "preset": "tfserving-error-rate"},
              {"name": "latency", "preset": "tfserving-latency-p99"}]
    spec = analysis_spec(recorded.prometheus.url, f"{INTERVAL}s", checks=checks, minSampleCount=20)
    _, records = run_once(recorded.provider.at(EVALUATED_AT), spec, _variables(model))
    assert {r.name: (r.verdict, r.reason) for r in records} == expected
    assert run_verdict(records) == verdict


# The example release and what the operator makes of it.

OWNER = {"apiVersion": "modelrelease.io/v1alpha1", "kind": "ModelRelease",
         "metadata": {"name": "digits", "namespace": "ml", "uid": "0b7e6c1e-0000-4000-8000-000000000013"}}


def _documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(RELEASE_EXAMPLE.read_text())}


def _deployment(track: str, version_id: str) -> dict[str, Any]:
    spec = parse_spec(_documents()["ModelRelease"]["spec"])
    version = ModelVersion(id=version_id, name=f"full-{version_id[7:19]}", path=f"/models/digits/digits-{track}-1",
                           stage="full")
    return build_deployment(spec, OWNER, track, version, 2)


def test_the_example_release_runs_the_official_image_on_the_trainers_saved_model() -> None:
    spec = parse_spec(_documents()["ModelRelease"]["spec"])
    assert {c.preset for c in spec.analysis.checks} == set(TFSERVING)
    deployment = _deployment("canary", CANARY)
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    [server] = pod["containers"]
    assert re.fullmatch(r"tensorflow/serving:2\.\d+\.\d+", server["image"])
    assert server["command"] == ["/usr/bin/tensorflow_model_server"]
    assert server["args"] == ["--model_name=$(MODEL_NAME)", "--model_base_path=$(MODEL_PATH)/saved_model",
                              "--port=8500", "--rest_api_port=8501",
                              "--monitoring_config_file=/etc/tfserving/monitoring.config"]
    env = {e["name"]: e["value"] for e in server["env"]}
    # Kubernetes expands $(VAR) in args only for variables of the container's env.
    assert {m for a in server["args"] for m in re.findall(r"\$\((\w+)\)", a)} <= set(env)
    assert (env["MODEL_NAME"], env["MODEL_PATH"]) == ("digits", "/models/digits/digits-canary-1")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": f"/v1/models/{spec.model.name}", "port": 8501}, probe
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/etc/tfserving"]["readOnly"] is True and mounts["/models"]["readOnly"] is True
    assert mounts["/tmp"]["name"] == "tmp" and server["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = _documents()["ConfigMap"]["metadata"]["name"]
    assert volumes[mounts["/etc/tfserving"]["name"]]["configMap"]["name"] == config_map


def test_the_monitoring_config_serves_the_path_prometheus_scrapes() -> None:
    config = _documents()["ConfigMap"]["data"]["monitoring.config"]
    assert re.search(r"prometheus_config\s*\{[^}]*enable:\s*true", config)
    [path] = re.findall(r'path:\s*"([^"]+)"', config)
    [job] = yaml.safe_load(SCRAPE_EXAMPLE.read_text())["scrape_configs"]
    assert job["metrics_path"] == path


def _sanitized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_role_targets(pod: dict[str, Any], ip: str, phase: str = "Running") -> list[dict[str, Any]]:
    """What Prometheus' Kubernetes discovery (role: pod) finds for a pod: one target per container port
    with the pod's meta labels (discovery/kubernetes/pod.go, podLabels and buildPod)."""
    meta = pod["metadata"]
    common = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
              "__meta_kubernetes_pod_ip": ip, "__meta_kubernetes_pod_phase": phase,
              "__meta_kubernetes_pod_ready": "true"}
    for kind, values in (("label", meta.get("labels", {})), ("annotation", meta.get("annotations", {}))):
        for key, value in values.items():
            common[f"__meta_kubernetes_pod_{kind}_{_sanitized(key)}"] = value
            common[f"__meta_kubernetes_pod_{kind}present_{_sanitized(key)}"] = "true"
    return [{"targets": [f"{ip}:{port['containerPort']}"],
             "labels": {**common, "__meta_kubernetes_pod_container_name": container["name"],
                        "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                        "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                        "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")}}
            for container in pod["spec"]["containers"] for port in container.get("ports", [])]


def _pod(deployment: dict[str, Any], name: str, release: str = "digits") -> dict[str, Any]:
    template = copy.deepcopy(deployment["spec"]["template"])
    template["metadata"].update(name=name, namespace="ml")
    template["metadata"]["labels"]["modelrelease.io/release"] = release
    return template


def test_the_scrape_config_labels_each_server_pod_with_its_track_and_version(tmp_path: Path) -> None:
    stable, canary = _deployment("stable", STABLE), _deployment("canary", CANARY)
    groups = [*pod_role_targets(_pod(stable, "digits-stable-1"), "10.1.0.1"),
              *pod_role_targets(_pod(canary, "digits-canary-1"), "10.1.0.2"),
              *pod_role_targets(_pod(canary, "digits-canary-2"), "10.1.0.3", phase="Pending"),
              *pod_role_targets(_pod(canary, "other-canary-1", release="other"), "10.1.0.4")]
    (tmp_path / "pods.json").write_text(json.dumps(groups))
    # Debian's promtool is built without Kubernetes discovery, so the pod role is stood in for by file
    # discovery with the same meta labels; everything else in the configuration is checked as it is.
    config = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    [job] = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.json")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    checked = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    found = subprocess.run(["promtool", "check", "service-discovery", "--timeout=3s", str(tmp_path / "prometheus.yml"),
                            job["job_name"]], capture_output=True, text=True, check=False)
    assert found.returncode == 0, found.stderr
    kept = sorted((t["labels"] for t in json.loads(found.stdout) if t["labels"]), key=lambda labels: labels["pod"])
    assert [(t["__address__"], t["track"], t["version"], t["namespace"], t["pod"]) for t in kept] == [
        ("10.1.0.2:8501", "canary", CANARY, "ml", "digits-canary-1"),
        ("10.1.0.1:8501", "stable", STABLE, "ml", "digits-stable-1"),
    ]
    assert {t["__metrics_path__"] for t in kept} == {"/monitoring/prometheus/metrics"}
