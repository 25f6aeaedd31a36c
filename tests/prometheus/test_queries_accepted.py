"""Every query we can send is valid PromQL, and no release name can change what a query selects."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrelease.api.spec import AnalysisCheck
from modelrelease.core.measurement import ReleaseVariables, render_check
from modelrelease.promql.presets import PRESETS
from modelrelease.promql.templates import render
from tests.prometheus.analysis_helpers import CUSTOM_CHECK, poll
from tests.prometheus.conftest import Live

CUSTOM_TEMPLATES = {
    "success-rate": CUSTOM_CHECK["query"],
    "regex-matcher": (
        'sum(rate(modelserver_requests_total{model=~"{{ model }}",track!~"{{ track }}x"}[{{ interval }}]))'
    ),
    "release-labels": 'max(kube_deployment_status_replicas{namespace="{{ namespace }}",deployment="{{ release }}"})',
}
HOSTILE = [
    '"} or vector(1) #',
    '" or vector(1) or "',
    "' or vector(1) or '",
    "` or vector(1) or `",
    'a"b',
    "back\\slash\\",
    '\\"} or vector(1) #',
    "{{ model }}",
    "}{",
    "line\nbreak",
    "carriage\rreturn\ttab",
    "nul\x00bell\x07",
    "\ufffd",
    ".*",
    "live-healthy|.*",
    "ünïcödé ✓",
]
STRING_VARIABLES = ("release", "namespace", "model", "version", "track")


def every_query(values: dict[str, str]) -> dict[str, str]:
    rendered = {}
    for name, preset in PRESETS.items():
        rendered[f"{name}/query"] = render(preset.query, values)
        rendered[f"{name}/sample_query"] = render(preset.sample_query, values)
    for name, template in CUSTOM_TEMPLATES.items():
        rendered[name] = render(template, values)
    return rendered


@pytest.fixture
def scraped(live: Live) -> Live:
    """Live data to select from: without it, "selects nothing" would prove nothing."""
    query = render(CUSTOM_CHECK["query"], live.variables("live-healthy").values("canary", "v2"))
    poll(lambda: live.provider.query(query), lambda result: result.has_data, "a rate over scraped series")
    return live


def evaluate(live: Live, promql: str) -> dict:
    """The raw API answer, so a test can see exactly which series Prometheus selected."""
    response = requests.get(f"{live.prometheus.url}/api/v1/query", params={"query": promql}, timeout=10)
    assert response.status_code == 200, f"{promql!r}: {response.status_code} {response.text}"
    return response.json()["data"]


def test_every_preset_and_custom_template_renders_to_promql_prometheus_accepts(live: Live) -> None:
    values = live.variables("live-healthy").values("canary", "v2")
    for name, promql in every_query(values).items():
        result = live.provider.query(promql)
        assert result.ok, f"{name}: {promql} -> {result.error}"


def test_the_queries_a_check_sends_for_both_tracks_are_accepted(live: Live) -> None:
    variables = live.variables("live-healthy")
    for preset in PRESETS:
        rendered = render_check(AnalysisCheck(name="c", preset=preset, max_ratio=2.0), variables)
        for promql in (rendered.canary, rendered.stable, rendered.samples):
            assert promql is not None
            assert live.provider.query(promql).ok, promql


def test_a_broken_template_is_caught_by_prometheus(live: Live) -> None:
    """The acceptance test above can fail: a template with a PromQL mistake is rejected."""
    broken = 'sum(rate(modelserver_requests_total{model="{{ model }}"}[{{ interval }}])'
    result = live.provider.query(render(broken, {"model": "m", "interval": "5s"}))
    assert result.error_kind == "rejected" and "parse error" in (result.error or "")


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_a_hostile_value_selects_nothing(scraped: Live, hostile: str) -> None:
    live = scraped
    variables = ReleaseVariables(hostile, hostile, hostile, hostile, hostile, timedelta(seconds=5))
    for track in ("canary", hostile):
        for name, promql in every_query(variables.values(track, hostile)).items():
            result = live.provider.query(promql)
            assert result.ok, f"{name}: {promql!r} -> {result.error}"
            assert not result.has_data, f"{name}: {promql!r} selected {result.value}"


@pytest.mark.parametrize("hostile", HOSTILE, ids=repr)
def test_prometheus_reads_back_exactly_the_value_that_was_rendered(live: Live, hostile: str) -> None:
    """absent() answers with the label values of its equality matchers, i.e. what Prometheus parsed."""
    for variable in STRING_VARIABLES:
        promql = render(f'absent(no_such_metric{{probe="{{{{ {variable} }}}}"}})', {variable: hostile})
        [series] = evaluate(live, promql)["result"]
        assert series["metric"] == {"probe": hostile}


def test_the_regex_matcher_matches_the_value_literally(scraped: Live) -> None:
    live = scraped
    template = 'count(modelserver_requests_total{model=~"{{ model }}"})'
    assert evaluate(live, render(template, {"model": "live-healthy"}))["result"]  # the template selects
    assert not evaluate(live, render(template, {"model": "live-.*"}))["result"]
    assert not evaluate(live, render(template, {"model": "live-healthy|live-slow"}))["result"]


@settings(max_examples=60, deadline=None)
@given(value=st.text(st.characters(codec="utf-8"), min_size=1, max_size=30))
def test_any_text_round_trips_through_a_quoted_variable(live: Live, value: str) -> None:
    promql = render('absent(no_such_metric{probe="{{ model }}",track="{{ track }}"})', {"model": value,
                                                                                        "track": "t"})
    [series] = evaluate(live, promql)["result"]
    assert series["metric"] == {"probe": value, "track": "t"}
