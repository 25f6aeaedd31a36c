"""Reading one number from Prometheus: instant queries, credentials, TLS, and plain-language outcomes.

Every answer becomes a ``QueryResult`` of one of three kinds, because analysis treats them differently:
- a value: one finite number;
- no data: an empty vector, NaN or ±Inf (nothing to judge yet; never a pass);
- an error: Prometheus unreachable, too slow, 5xx, a rejected query (4xx), an answer that is not
  Prometheus' JSON (truncated, an HTML page, the wrong shape, larger than ``MAX_ANSWER_BYTES``), or
  several series where one is expected. Several series are never reduced to one by picking: that would
  judge an arbitrary pod. Nothing an answer holds can make the classification raise.

A range query (``query_range``, for a statistical comparison) answers samples instead of a value: every
finite value of every series at every step (``prometheus_ranges``), with the same errors.

Queries go through a plain ``requests`` session (the transport prometheus-api-client uses) rather than
``PrometheusConnect.custom_query``, because that method drops the HTTP status, Prometheus' own error
text and the result type, which are exactly what the classification needs. Retries are off: analysis
runs again on its next interval, and a retry with back-off would outlast the timeout the user set. The
body is read under the same timeout as a whole (a server trickling bytes cannot hold a run longer) and
uncompressed, up to a size bound.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from typing import Any, Protocol

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InsecureRequestWarning, ReadTimeoutError

from modelrelease.adapters.prometheus_answers import (
    DataClassifier,
    ErrorKind,
    QueryResult,
    classify_data,
    classify_response,
    decode_text,
    format_labels,
    json_or_none,
    shorten,
)
from modelrelease.adapters.prometheus_buckets import classify_buckets_data
from modelrelease.adapters.prometheus_ranges import (
    MAX_RANGE_SERIES,
    classify_range_data,
    range_problem,
    seconds_of,
)
from modelrelease.api.base import parse_duration
from modelrelease.api.spec import PrometheusSpec

__all__ = [
    "MAX_ANSWER_BYTES", "MAX_RANGE_SERIES", "ErrorKind", "MetricsProvider", "PrometheusConnection",
    "PrometheusProvider", "QueryResult", "RangeMetricsProvider", "classify_data", "classify_range_data",
    "classify_response", "connection_from_spec", "connection_from_spec_async", "format_labels", "is_ready",
    "request_reload",
]

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 10 * 1024 * 1024
"""The largest answer read. One number is a few hundred bytes; anything near this is a query returning
thousands of series (or not Prometheus at all), and reading it would only cost the operator memory."""
_READ_CHUNK = 64 * 1024


class MetricsProvider(Protocol):
    """Anything that answers an instant PromQL query; tests and the runtime may pass a fake."""

    def query(self, promql: str) -> QueryResult: ...


class RangeMetricsProvider(MetricsProvider, Protocol):
    """Also answers range and bucket queries: the samples of a statistical comparison."""

    def query_range(
        self, promql: str, start: float | datetime, end: float | datetime, step_seconds: float
    ) -> QueryResult: ...

    def query_buckets(self, promql: str) -> QueryResult: ...


@dataclass(frozen=True)
class PrometheusConnection:
    """How to reach one Prometheus, with secret values already read."""

    url: str
    timeout_seconds: float = 10.0
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_pem: str | None = None
    """A CA bundle as PEM text (as read from a Secret)."""
    ca_file: str | None = None
    """A CA bundle file path; an alternative to ca_pem."""
    insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("set a bearer token or basic auth for Prometheus, not both")
        if self.ca_pem is not None and self.ca_file is not None:
            raise ValueError("set a CA bundle as PEM text or as a file, not both")
        if self.timeout_seconds <= 0:
            raise ValueError("the Prometheus timeout must be positive")


class SecretReader(Protocol):
    """Reads one key of a Secret (decoded). The operator passes a Kubernetes-backed one."""

    def read(self, namespace: str, name: str, key: str) -> str: ...


class AsyncSecretReader(Protocol):
    def read(self, namespace: str, name: str, key: str) -> Awaitable[str]: ...


def _secret_refs(spec: PrometheusSpec) -> dict[str, tuple[str, str]]:
    """The Secret keys a spec needs, by purpose: {purpose: (secret name, key)}."""
    refs: dict[str, tuple[str, str]] = {}
    if spec.bearer_token_secret_ref is not None:
        refs["token"] = (spec.bearer_token_secret_ref.name, spec.bearer_token_secret_ref.key)
    if spec.basic_auth is not None:
        refs["username"] = (spec.basic_auth.secret_name, spec.basic_auth.username_key)
        refs["password"] = (spec.basic_auth.secret_name, spec.basic_auth.password_key)
    if spec.ca_secret_ref is not None:
        refs["ca"] = (spec.ca_secret_ref.name, spec.ca_secret_ref.key)
    return refs


def _connection(spec: PrometheusSpec, secrets: Mapping[str, str]) -> PrometheusConnection:
    basic = (secrets["username"], secrets["password"]) if "username" in secrets else None
    return PrometheusConnection(
        url=spec.url,
        timeout_seconds=parse_duration(spec.timeout).total_seconds(),
        bearer_token=secrets["token"].strip() if "token" in secrets else None,
        basic_auth=basic,
        ca_pem=secrets.get("ca"),
        insecure_skip_verify=spec.insecure_skip_verify,
    )


def connection_from_spec(spec: PrometheusSpec, namespace: str, reader: SecretReader) -> PrometheusConnection:
    """Resolve a spec's Secret references with a synchronous reader."""
    values = {purpose: reader.read(namespace, name, key) for purpose, (name, key) in _secret_refs(spec).items()}
    return _connection(spec, values)


async def connection_from_spec_async(
    spec: PrometheusSpec, namespace: str, reader: AsyncSecretReader
) -> PrometheusConnection:
    """Resolve a spec's Secret references with an asynchronous reader (e.g. from a kopf handler)."""
    values = {}
    for purpose, (name, key) in _secret_refs(spec).items():
        values[purpose] = await reader.read(namespace, name, key)
    return _connection(spec, values)


class PrometheusProvider:
    """Instant queries against one Prometheus, over one HTTP session (keep-alive between queries).

    Use it from one thread at a time, e.g. one provider per analysis loop.
    """

    def __init__(self, connection: PrometheusConnection) -> None:
        self.connection = connection
        self._session = requests.Session()
        self._ca_path: str | None = None
        # Passed with every request: a session-level setting loses to REQUESTS_CA_BUNDLE in the environment.
        self._verify: bool | str = True
        # Uncompressed: the size bound then counts what is parsed, and no small body inflates to a huge one.
        self._session.headers["Accept-Encoding"] = "identity"
        if connection.bearer_token is not None:
            self._session.headers["Authorization"] = f"Bearer {connection.bearer_token}"
        if connection.basic_auth is not None:
            self._session.auth = connection.basic_auth
        if connection.insecure_skip_verify:
            self._verify = False
            # The user chose this explicitly; one log line beats a warning on every query.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            log.warning("TLS verification is off for Prometheus at %s", connection.url)
        elif connection.ca_pem is not None:
            # requests wants a file; the bundle lives as long as this provider.
            handle, self._ca_path = tempfile.mkstemp(prefix="prometheus-ca-", suffix=".pem")
            with os.fdopen(handle, "w") as file:
                file.write(connection.ca_pem)
            self._verify = self._ca_path
        elif connection.ca_file is not None:
            self._verify = connection.ca_file

    @classmethod
    def from_spec(cls, spec: PrometheusSpec, namespace: str, reader: SecretReader) -> PrometheusProvider:
        return cls(connection_from_spec(spec, namespace, reader))

    @property
    def url(self) -> str:
        return self.connection.url

    def close(self) -> None:
        self._session.close()
        if self._ca_path is not None:
            os.unlink(self._ca_path)
            self._ca_path = None

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def at(self, time: float | datetime) -> RangeMetricsProvider:
        """A view of this provider that evaluates every query at a fixed time (history, replays)."""
        return _AtTime(self, time)

    def query(self, promql: str, time: float | datetime | None = None) -> QueryResult:
        """Evaluate ``promql`` now (or at ``time``) and classify the answer."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{seconds_of(time):.3f}"
        return self._get("api/v1/query", params, classify_data)

    def query_buckets(self, promql: str, time: float | datetime | None = None) -> QueryResult:
        """Evaluate a histogram's bucket counts by le now (or at ``time``): ``QueryResult.buckets``."""
        params = {"query": promql}
        if time is not None:
            params["time"] = f"{seconds_of(time):.3f}"
        return self._get("api/v1/query", params, classify_buckets_data)

    def query_range(
        self, promql: str, start: float | datetime, end: float | datetime, step_seconds: float
    ) -> QueryResult:
        """Evaluate ``promql`` at every ``step_seconds`` from ``start`` to ``end``; the answer's samples are
        every finite value of every series (``QueryResult.samples``; none is zero samples, not an error)."""
        first, last = seconds_of(start), seconds_of(end)
        problem = range_problem(first, last, step_seconds)
        if problem is not None:
            return QueryResult.failed("rejected", problem)
        params = {"query": promql, "start": f"{first:.3f}", "end": f"{last:.3f}", "step": f"{step_seconds:.3f}"}
        return self._get("api/v1/query_range", params, classify_range_data)

    def _get(self, path: str, params: dict[str, str], classify: DataClassifier) -> QueryResult:
        """One GET of the query API within the connection's timeout, its answer classified."""
        timeout = self.connection.timeout_seconds
        # Plain seconds: Prometheus reads "0.5" but not "0.5s" (its durations take no fractions).
        params = {**params, "timeout": f"{timeout:.3f}"}
        deadline = monotonic() + timeout
        try:
            response = self._session.get(
                _endpoint(self.url, path), params=params, timeout=timeout, verify=self._verify, stream=True,
            )
        except requests.RequestException as exc:
            return _transport_failure(exc, self.url, timeout)
        with response:
            try:
                payload = _read_bounded(response, deadline)
            except _PastDeadline:
                return _timed_out(self.url, timeout)
            except _TooLarge:
                return QueryResult.failed("shape", _too_large())
            except ReadTimeoutError:
                return _timed_out(self.url, timeout)
            except (Urllib3Error, requests.RequestException, OSError) as exc:
                return QueryResult.failed(
                    "unreachable", f"Prometheus at {self.url} broke off its answer ({_root_cause(exc)})")
        return classify_response(response.status_code, json_or_none(payload), decode_text(payload, response.encoding),
                                 retry_after=response.headers.get("Retry-After"), classify=classify)


class _PastDeadline(Exception):
    pass


class _TooLarge(Exception):
    pass


def _read_bounded(response: requests.Response, deadline: float) -> bytes:
    """The body, read one socket read at a time, each allowed only the time left before ``deadline``."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise _TooLarge
    raw = response.raw
    body = bytearray()
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise _PastDeadline
        _wait_at_most(raw, remaining)
        chunk = raw.read1(_READ_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _TooLarge


def _wait_at_most(raw: Any, seconds: float) -> None:
    # The read timeout requests sets is per socket read; narrowing it to what is left of the deadline
    # bounds the whole body. urllib3 sets its own timeout again before the connection's next request.
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _timed_out(url: str, timeout: float) -> QueryResult:
    return QueryResult.failed("timeout", f"Prometheus at {url} did not answer within {timeout:g}s")


def _too_large() -> str:
    return (
        f"the answer from Prometheus is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB and was not read; "
        "a query for one number answers in bytes: aggregate the check's query, e.g. with sum()"
    )


@dataclass(frozen=True)
class _AtTime:
    provider: PrometheusProvider
    time: float | datetime

    def query(self, promql: str) -> QueryResult:
        return self.provider.query(promql, time=self.time)

    def query_buckets(self, promql: str) -> QueryResult:
        return self.provider.query_buckets(promql, time=self.time)

    def query_range(
        self, promql: str, start: float | datetime, end: float | datetime, step_seconds: float
    ) -> QueryResult:
        # A range carries its own times; the view's time is for instant queries only.
        return self.provider.query_range(promql, start, end, step_seconds)


def _endpoint(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"


def _transport_failure(exc: requests.RequestException, url: str, timeout: float) -> QueryResult:
    if isinstance(exc, requests.Timeout):
        return _timed_out(url, timeout)
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "certificate not trusted" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else "handshake failed"
        return QueryResult.failed("tls", f"TLS with Prometheus at {url}: {reason}")
    return QueryResult.failed("unreachable", f"Prometheus at {url} is unreachable ({_root_cause(exc)})")


def _root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason, e.g. "connection refused", instead of urllib3's retry prose."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "connection closed without an answer"),
        ("Connection aborted", "connection closed without an answer"),
        ("IncompleteRead", "connection closed before the whole answer arrived"),
        ("Connection broken", "connection closed before the whole answer arrived"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__



# Lifecycle endpoints, used by the local Prometheus launcher (tests, benchmark, embedded demo).


def is_ready(url: str, timeout: float = 2.0, verify: bool | str = True) -> bool:
    """Whether the server at ``url`` answers /-/ready with 200 (it has loaded its TSDB)."""
    try:
        return requests.get(_endpoint(url, "-/ready"), timeout=timeout, verify=verify).status_code == 200
    except requests.RequestException:
        return False


def request_reload(url: str, timeout: float = 30.0, verify: bool | str = True) -> None:
    """Ask a server started with --web.enable-lifecycle to reload its configuration; raise if it fails."""
    response = requests.post(_endpoint(url, "-/reload"), timeout=timeout, verify=verify)
    if response.status_code != 200:
        raise RuntimeError(f"Prometheus could not reload its configuration: {shorten(response.text)}")
