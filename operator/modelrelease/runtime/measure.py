"""Send one analysis run's queries to Prometheus and hand the raw readings back to the core.

What to ask is the core's (``core.measurement.request_measurements``), and so is what the answers
mean (``AnalysisRun.measurements`` and ``core.analysis.judge``); this module only executes. It is
synchronous and bounded: every query carries the provider's timeout; a check stops at its first
failed query; and once Prometheus proves unreachable the rest of the run is not attempted, so a run
costs at most about one timeout however many checks there are. The operator calls it in a worker
thread.
"""

from __future__ import annotations

import logging

from modelrelease.adapters.prometheus import MetricsProvider, QueryResult
from modelrelease.core.measurement import AnalysisRun, Ask, MeasurementRequest, Reading, Role

log = logging.getLogger(__name__)


class _Run:
    """Queries of one run; remembers a connection failure so later queries are not attempted."""

    def __init__(self, provider: MetricsProvider) -> None:
        self.provider = provider
        self.down: QueryResult | None = None

    def ask(self, ask: Ask) -> QueryResult:
        if self.down is not None:
            return self.down
        try:
            result = self._send(ask)
        except Exception as exc:  # whatever a provider raises, the run records an Error and goes on
            log.exception("a Prometheus query raised instead of answering")
            result = QueryResult.failed("server", f"the answer could not be read ({type(exc).__name__}: {exc})")
        if result.connection_failed:
            self.down = result
        return result

    def _send(self, ask: Ask) -> QueryResult:
        if ask.buckets:
            query_buckets = getattr(self.provider, "query_buckets", None)
            if query_buckets is None:
                return QueryResult.failed("server", "this metrics provider answers no bucket queries")
            buckets: QueryResult = query_buckets(ask.promql)
            return buckets
        if ask.window is None:
            return self.provider.query(ask.promql)
        query_range = getattr(self.provider, "query_range", None)
        if query_range is None:
            return QueryResult.failed("server", "this metrics provider answers no range queries")
        window = ask.window
        result: QueryResult = query_range(ask.promql, window.start, window.end, window.step_seconds)
        return result


def read_run(provider: MetricsProvider, request: MeasurementRequest) -> AnalysisRun:
    """Send every query of the request, in order, and return what came back."""
    run = _Run(provider)
    readings: dict[str, dict[Role, Reading]] = {}
    for item in request.checks:
        answers: dict[Role, Reading] = {}
        for ask in item.queries.by_role():
            answers[ask.role] = run.ask(ask)  # a QueryResult is the core's Reading
            if not answers[ask.role].ok:
                break  # the check is an error either way; its other queries would only cost time
        readings[item.check] = answers
    return AnalysisRun(request, readings)
