"""Durations read as Kubernetes reads them (durationpy), without the units Go would refuse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrelease.api import InvalidSpecError, parse_spec
from modelrelease.api.base import parse_duration
from tests.core.world import base_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1.5m", timedelta(seconds=90)),
        ("2m30s", timedelta(seconds=150)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("0s", timedelta(0)),
    ],
)
def test_kubernetes_duration_forms_are_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("90", "is not a duration"),
        ("5 minutes", "is not a duration"),
        ("1d", "is not a duration"),  # Go's ParseDuration has no days: kubectl users would be surprised later
        ("2w", "is not a duration"),
        ("", "is not a duration"),
        ("-30s", "is negative"),
    ],
)
def test_other_forms_are_refused_with_the_fix(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_duration(text)


def test_a_step_duration_error_names_the_field() -> None:
    raw = base_spec()
    raw["stages"][0]["steps"][0]["duration"] = "1d"
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(raw)
    assert caught.value.problems == [
        "spec.stages[0].steps[0].duration: '1d' is not a duration; write it like 30s, 5m, 1h30m or 500ms"]
