"""What one answer from Prometheus' query API means: a number (or samples), no data, or an error in words.

Pure: an HTTP status, the parsed body and its text in, a ``QueryResult`` out, so every answer a server
could send is classified here and unit-tested without one. Nothing in an answer can make it raise.
/api/v1/query answers one number (``classify_data``); /api/v1/query_range answers samples
(``classify_range_data``, in ``prometheus_ranges``); both share the HTTP handling of ``classify_response``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelrelease.core.measurement import Reading

ErrorKind = Literal["unreachable", "timeout", "tls", "server", "rejected", "auth", "shape"]
_MAX_MESSAGE = 300
_MAX_LISTED_SERIES = 4
# Prometheus' own errorType values for a query that cannot be evaluated as written (400 and 422).
_QUERY_ERROR_TYPES = frozenset({"bad_data", "execution"})
_QUERY_FIX = "the check's query is wrong: fix it in spec.analysis.checks"


@dataclass(frozen=True)
class QueryResult(Reading):
    """One instant query's outcome: the core's ``Reading`` (a finite value, no data, or an error with a
    short message), plus what kind of error it was, which decides whether the run goes on asking."""

    error_kind: ErrorKind | None = None

    @classmethod
    def failed(cls, kind: ErrorKind, message: str) -> QueryResult:
        return cls(error=shorten(message), error_kind=kind)

    @property
    def has_data(self) -> bool:
        """A value, at least one sample of a range, or a bucket."""
        return self.value is not None or bool(self.samples) or bool(self.buckets)

    @property
    def connection_failed(self) -> bool:
        """The server could not be reached at all, so other queries now would fail the same way."""
        return self.error_kind in ("unreachable", "timeout", "tls")


def json_or_none(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        return None


def decode_text(payload: bytes, encoding: str | None) -> str:
    try:
        return payload.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return payload.decode("utf-8", errors="replace")


def shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


DataClassifier = Callable[[Any, Any], QueryResult]
"""What a successful answer's data means: (resultType, result) in, a QueryResult out."""


def classify_response(status: int, body: Any, text: str = "", retry_after: str | None = None,
                      classify: DataClassifier | None = None) -> QueryResult:
    """Turn an HTTP answer from the query API into a QueryResult (kept pure for unit tests). The data of a
    successful answer goes to ``classify``: by default ``classify_data``, one number of an instant query."""
    prometheus_error = body.get("error") if isinstance(body, dict) else None
    detail = shorten(str(prometheus_error)) if prometheus_error else _describe_text(text)
    if status in (401, 403):
        return QueryResult.failed("auth", f"Prometheus refused access ({status}); check the credentials")
    if status >= 500:
        if isinstance(body, dict) and body.get("errorType") == "timeout":
            return QueryResult.failed("timeout", f"the query timed out in Prometheus: {detail}")
        later = f", asking to retry after {shorten(retry_after)[:40]}" if retry_after else ""
        return QueryResult.failed("server", f"Prometheus answered {status}{later}: {detail}")
    if status == 404:
        return QueryResult.failed("rejected", "no Prometheus query API at this URL (404); check prometheus.url")
    if status >= 400:
        fix = f"; {_QUERY_FIX}" if isinstance(body, dict) and body.get("errorType") in _QUERY_ERROR_TYPES else ""
        # The fix is appended after shortening the detail, so a long parse error cannot cut it off.
        return QueryResult.failed("rejected", f"Prometheus rejected the query ({status}): {detail[:200]}{fix}")
    if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        what = "not JSON" if body is None else "not a successful Prometheus answer"
        return QueryResult.failed("server", f"unexpected answer from Prometheus ({status}, {what}): {detail}")
    data = body.get("data")
    if not isinstance(data, dict):
        return QueryResult.failed(
            "shape", "the answer from Prometheus has no data object; is prometheus.url Prometheus?")
    return (classify or classify_data)(data.get("resultType"), data.get("result"))


def _describe_text(text: str) -> str:
    """A non-JSON body for people: an HTML page (a proxy's error, a login page) by its title."""
    stripped = text.strip()
    if not stripped:
        return "no details"
    if stripped[:1] == "<":
        title = _HTML_TITLE.search(stripped)
        named = f" titled {shorten(title.group(1))[:80]!r}" if title else ""
        return f"an HTML page{named}, not Prometheus' JSON (a proxy or login page at prometheus.url?)"
    return shorten(stripped)


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def classify_data(result_type: Any, result: Any) -> QueryResult:
    """One number out of a successful query's data, or why there is none."""
    if result_type == "scalar":
        return _number(result)
    if result_type == "vector":
        if not isinstance(result, list):
            return QueryResult.failed("shape", f"the vector's result is {_kind(result)}, not a list of series")
        if not result:
            return QueryResult.no_data("empty result")
        if len(result) > 1:
            return QueryResult.failed("shape", _several_series(result))
        series = result[0]
        if not isinstance(series, dict):
            return QueryResult.failed("shape", f"the vector's series is {_kind(series)}, not an object")
        if "value" not in series:
            if "histogram" in series:
                return QueryResult.failed("shape", "the query returns a native histogram, not a number")
            return QueryResult.failed("shape", "the vector's series has no value")
        return _number(series["value"])
    if result_type == "matrix":
        return QueryResult.failed(
            "shape", "the query returns a range vector; wrap it in a function such as rate() or avg_over_time()"
        )
    named = result_type if isinstance(result_type, str) and result_type else "missing"
    return QueryResult.failed("shape", f"the query returns a {shorten(named)[:40]} result, not a number")


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a JSON {type(value).__name__}"


def sample_value(sample: Any) -> float | None:
    """The number of a [time, "value"] pair, NaN and ±Inf included, or None when it is not one.
    Prometheus writes the value as a string, "NaN", "+Inf" and "-Inf" included; a JSON number is read
    too, but nothing else (true is not 1)."""
    raw = sample[1] if isinstance(sample, list) and len(sample) == 2 else None
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        try:
            return float(raw)
        except (ValueError, OverflowError):  # OverflowError: a JSON integer too large for a float
            return None
    return None


def unreadable_sample(sample: Any) -> QueryResult:
    shown = shorten(repr(sample))[:120]
    return QueryResult.failed("shape", f'unreadable sample {shown}: expected [time, "number"]')


def _number(sample: Any) -> QueryResult:
    value = sample_value(sample)
    if value is None:
        return unreadable_sample(sample)
    if math.isnan(value):
        return QueryResult.no_data("NaN")
    if math.isinf(value):
        return QueryResult.no_data("+Inf" if value > 0 else "-Inf")
    return QueryResult.of(value)


def _several_series(result: list[Any]) -> str:
    shown = ", ".join(format_labels(labels_of(series)) for series in result[:_MAX_LISTED_SERIES])
    more = f" and {len(result) - _MAX_LISTED_SERIES} more" if len(result) > _MAX_LISTED_SERIES else ""
    return (
        f"the query returns {len(result)} series where one is expected: {shown}{more}; "
        "aggregate them, e.g. with sum()"
    )


def labels_of(series: Any) -> Mapping[str, str]:
    labels = series.get("metric") if isinstance(series, dict) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def format_labels(labels: Mapping[str, str]) -> str:
    """A series' label set as PromQL writes it: name{a="1", b="2"}."""
    name = labels.get("__name__", "")
    pairs = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()) if key != "__name__")
    return f"{name}{{{pairs}}}"
