"""How the provider classifies what it gets back: values, no data, and errors with plain messages."""

from __future__ import annotations

import base64
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrelease.adapters.prometheus import (
    PrometheusConnection,
    PrometheusProvider,
    QueryResult,
    classify_response,
    connection_from_spec,
    connection_from_spec_async,
)
from modelrelease.api.spec import PrometheusSpec
from modelrelease_local.ports import free_port
from modelrelease_local.prometheus import PrometheusProcess
from tests.prometheus.analysis_helpers import poll
from tests.prometheus.conftest import Live
from tests.prometheus.fake_http import FakeServer


def provider(url: str, **options: object) -> PrometheusProvider:
    return PrometheusProvider(PrometheusConnection(url, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ("42", QueryResult.of(42.0)),
        ("scalar(vector(3))", QueryResult.of(3.0)),
        ("vector(2.5)", QueryResult.of(2.5)),
        ("NaN", QueryResult.no_data("NaN")),
        ("vector(1) / 0", QueryResult.no_data("+Inf")),
        ("-Inf", QueryResult.no_data("-Inf")),
        ("no_such_metric", QueryResult.no_data("empty result")),
    ],
)
def test_values_and_no_data(live: Live, promql: str, expected: QueryResult) -> None:
    assert live.provider.query(promql) == expected


def test_a_bad_query_is_an_error_with_prometheus_reason(live: Live) -> None:
    result = live.provider.query("sum(rate(x[5m])")
    assert result.error_kind == "rejected"
    assert result.error is not None and result.error.startswith("Prometheus rejected the query (400)")
    assert "parse error" in result.error


def test_several_series_are_an_error_naming_each_label_set(live: Live) -> None:
    up = poll(lambda: live.provider.query("up"), lambda r: r.error_kind == "shape", "both exporters scraped")
    assert up.error is not None and up.error.startswith("the query returns 2 series where one is expected")
    assert f'instance="{live.stable.address}"' in up.error and f'instance="{live.canary.address}"' in up.error
    assert up.value is None  # never one of them picked


def test_a_range_vector_is_an_error(live: Live) -> None:
    assert live.provider.query("vector(1)[1m:]").error_kind == "shape"


@pytest.mark.parametrize("timeout", [0.5, 1.25, 10])
def test_any_timeout_is_accepted_by_prometheus(live: Live, timeout: float) -> None:
    """The timeout also travels as a query parameter, where Prometheus is picky about its format."""
    with provider(live.prometheus.url, timeout_seconds=timeout) as short:
        assert short.query("1") == QueryResult.of(1.0)


def test_the_evaluation_time_is_passed_through(live: Live) -> None:
    assert live.provider.query("time()", time=1_704_067_200).value == 1_704_067_200
    assert live.provider.at(1_704_067_260).query("time()").value == 1_704_067_260


def test_an_unreachable_server_is_an_error() -> None:
    port = free_port()
    result = provider(f"http://127.0.0.1:{port}", timeout_seconds=2).query("1")
    assert result.error_kind == "unreachable" and result.connection_failed
    assert result.error == f"Prometheus at http://127.0.0.1:{port} is unreachable (connection refused)"


def test_a_server_that_never_answers_is_a_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = provider(url, timeout_seconds=0.3).query("1")
    assert result.error_kind == "timeout" and result.connection_failed
    assert result.error == f"Prometheus at {url} did not answer within 0.3s"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def test_a_5xx_is_an_error(fake: FakeServer) -> None:
    fake.status, fake.body = 503, b"Service Unavailable"
    result = provider(fake.url).query("1")
    assert (result.error_kind, result.error) == ("server", "Prometheus answered 503: Service Unavailable")


def test_a_query_timeout_inside_prometheus_is_a_timeout(fake: FakeServer) -> None:
    fake.status, fake.body = 503, {"status": "error", "errorType": "timeout", "error": "query timed out"}
    assert provider(fake.url).query("1").error_kind == "timeout"


def test_refused_credentials_are_an_error(fake: FakeServer) -> None:
    fake.status, fake.body = 401, b"Unauthorized"
    assert provider(fake.url).query("1") == QueryResult.failed(
        "auth", "Prometheus refused access (401); check the credentials"
    )


def test_a_bearer_token_is_sent(fake: FakeServer) -> None:
    assert provider(fake.url, bearer_token="s3cret").query("1").value == 1.0
    assert fake.headers[-1]["Authorization"] == "Bearer s3cret"


def test_basic_auth_is_sent(fake: FakeServer) -> None:
    assert provider(fake.url, basic_auth=("ann", "pw")).query("1").value == 1.0
    assert fake.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()


def test_responses_that_are_not_prometheus_answers() -> None:
    assert classify_response(404, None, "nope").error_kind == "rejected"
    assert classify_response(422, {"error": "many-to-many matching not allowed"}).error == (
        "Prometheus rejected the query (422): many-to-many matching not allowed"
    )
    assert classify_response(200, None, "<html>").error_kind == "server"
    assert classify_response(200, {"status": "success", "data": {"resultType": "string", "result": [0, "a"]}}).error
    long = classify_response(500, {"error": "x" * 1000}).error
    assert long is not None and len(long) <= 300


def test_secret_references_are_resolved_through_the_reader() -> None:
    secrets = {("mon", "prom-token", "token"): "tok\n", ("mon", "prom-ca", "ca.crt"): "PEM"}

    class Reader:
        def read(self, namespace: str, name: str, key: str) -> str:
            return secrets[(namespace, name, key)]

    spec = PrometheusSpec.model_validate(
        {
            "url": "https://prom:9090",
            "timeout": "3s",
            "bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
            "caSecretRef": {"name": "prom-ca", "key": "ca.crt"},
        }
    )
    connection = connection_from_spec(spec, "mon", Reader())
    assert connection == PrometheusConnection(
        "https://prom:9090", timeout_seconds=3.0, bearer_token="tok", ca_pem="PEM"
    )


async def test_secret_references_are_resolved_through_an_async_reader() -> None:
    class Reader:
        async def read(self, namespace: str, name: str, key: str) -> str:
            return {"username": "ann", "password": "pw"}[key]

    spec = PrometheusSpec.model_validate({"url": "http://prom", "basicAuth": {"secretName": "prom-auth"}})
    connection = await connection_from_spec_async(spec, "mon", Reader())
    assert connection.basic_auth == ("ann", "pw") and connection.timeout_seconds == 10.0


def test_token_and_basic_auth_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        PrometheusConnection("http://p", bearer_token="t", basic_auth=("a", "b"))


@pytest.fixture(scope="module")
def tls_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusProcess, Path]]:
    workdir = tmp_path_factory.mktemp("prometheus-tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    web = {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}
    with PrometheusProcess(workdir, web_config=web) as prometheus:
        yield prometheus, cert


def test_tls_with_the_ca_bundle_as_pem(tls_prometheus: tuple[PrometheusProcess, Path]) -> None:
    prometheus, cert = tls_prometheus
    assert prometheus.url.startswith("https://")
    with provider(prometheus.url, ca_pem=cert.read_text()) as trusted:
        assert trusted.query("7").value == 7.0
    with provider(prometheus.url, ca_file=str(cert)) as trusted:
        assert trusted.query("7").value == 7.0


def test_tls_with_an_unknown_certificate_is_an_error(tls_prometheus: tuple[PrometheusProcess, Path]) -> None:
    prometheus, _ = tls_prometheus
    result = provider(prometheus.url).query("7")
    assert result.error_kind == "tls"
    assert result.error == f"TLS with Prometheus at {prometheus.url}: certificate not trusted"


def test_tls_verification_can_be_skipped(tls_prometheus: tuple[PrometheusProcess, Path]) -> None:
    prometheus, _ = tls_prometheus
    assert provider(prometheus.url, insecure_skip_verify=True).query("7").value == 7.0
