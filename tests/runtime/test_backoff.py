"""The delays between failed passes: bounded, growing, jittered, reset by success; Retry-After is a minimum."""

from __future__ import annotations

import random

import pytest

from modelrelease.runtime.backoff import Backoff, BackoffPolicy, RetryDelays


def test_error_delays_double_up_to_the_cap_within_equal_jitter_bounds():
    backoff = Backoff(BackoffPolicy(base=0.2, cap=60.0), random.Random(1))
    for attempt in range(15):
        ceiling = min(60.0, 0.2 * 2 ** attempt)
        delay = backoff.error()
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
    assert backoff.ceiling() == 60.0


def test_full_jitter_spreads_over_zero_to_the_ceiling():
    backoff = Backoff(BackoffPolicy(base=1.0, cap=1.0, jitter="full"), random.Random(2))
    delays = [backoff.error() for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert min(delays) < 0.25 and max(delays) > 0.75  # not stuck at a floor, as equal jitter is


def test_jitter_differs_between_releases_that_failed_together():
    first, second = Backoff(rng=random.Random(3)), Backoff(rng=random.Random(4))
    assert [first.error() for _ in range(5)] != [second.error() for _ in range(5)]


def test_a_seeded_generator_repeats_the_same_delays():
    assert ([Backoff(rng=random.Random(5)).error() for _ in range(3)] ==
            [Backoff(rng=random.Random(5)).error() for _ in range(3)])


def test_success_starts_the_growth_over():
    backoff = Backoff(BackoffPolicy(base=0.2, cap=60.0), random.Random(6))
    for _ in range(8):
        backoff.error()
    assert backoff.ceiling() == pytest.approx(51.2)
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.ceiling() == pytest.approx(0.2)
    assert 0.1 <= backoff.error() <= 0.2


def test_conflicts_wait_a_short_jittered_delay_without_growth():
    backoff = Backoff(BackoffPolicy(conflict=0.2), random.Random(7))
    delays = [backoff.conflict() for _ in range(50)]
    assert all(0.1 <= d <= 0.2 for d in delays) and len(set(delays)) > 1
    assert backoff.failures == 0  # a lost race says nothing about the server's health


def test_retry_after_wins_over_a_shorter_back_off_and_the_back_off_over_a_shorter_retry_after():
    backoff = Backoff(BackoffPolicy(base=0.2, cap=60.0), random.Random(8))
    assert backoff.throttled(3.0) == 3.0  # the first back-off is at most 0.2 s
    assert backoff.failures == 1  # throttles grow the back-off like errors
    for _ in range(9):
        backoff.error()
    assert 30.0 <= backoff.throttled(1.0) <= 60.0  # ceiling 60, equal jitter: the back-off is the longer
    assert backoff.throttled(None) > 0


def test_retry_delays_for_kopf_are_fresh_growing_and_bounded_each_time_they_are_iterated():
    delays = RetryDelays(count=12, policy=BackoffPolicy(base=0.5, cap=30.0))
    first, second = list(delays), list(delays)
    assert len(first) == len(second) == 12
    assert first != second  # jittered anew for each request kopf retries
    for attempt, delay in enumerate(first):
        ceiling = min(30.0, 0.5 * 2 ** attempt)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(("fields", "words"), [
    ({"base": 0.0}, "base (0.0) must be above 0"),
    ({"base": 5.0, "cap": 1.0}, "at most cap (1.0)"),
    ({"factor": 0.5}, "factor (0.5) must be at least 1"),
])
def test_a_policy_that_cannot_work_is_refused_with_the_field_named(fields, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        BackoffPolicy(**fields)
