"""The pure retry policy: backoff bounds, Retry-After parsing, which statuses retry."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from asyncbatch import RetryPolicy
from asyncbatch._retry import parse_retry_after, retry_delay, status_is_retryable

NOW = datetime(2026, 7, 20, 10, 0, 0, tzinfo=UTC)


def test_full_jitter_stays_within_the_cap() -> None:
    """Every draw lies in [0, min(max_delay, initial * 2**(n-1))] and spreads over it."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=30.0)
    rng = random.Random(7)
    for retry_number, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (60, 30.0)]:
        draws = [policy.backoff(retry_number, rng) for _ in range(500)]
        assert all(0.0 <= d <= cap for d in draws)
        # Full jitter: the draws use the whole window, not just its top.
        assert min(draws) < cap * 0.1
        assert max(draws) > cap * 0.9


def test_cap_growth_never_overflows() -> None:
    """A very high retry number keeps the cap at max_delay instead of overflowing."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=5.0)
    rng = random.Random(1)
    assert all(0.0 <= policy.backoff(10_000, rng) <= 5.0 for _ in range(100))


def test_same_seed_same_delays() -> None:
    """Jitter comes only from the injected rng."""
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(3)) for n in range(1, 6)]
    again = [policy.backoff(n, random.Random(3)) for n in range(1, 6)]
    assert first == again


def test_retry_after_is_a_floor_under_backoff() -> None:
    """A server-named wait longer than the backoff wins; a shorter one does not lower it."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=30.0)
    assert retry_delay(policy, 1, 12.0, random.Random(0)) == 12.0
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert retry_delay(policy, 6, 0.0, rng_a) == policy.backoff(6, rng_b)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_delay": -1.0}, {"max_delay": -1.0}, {"max_retry_after": -1}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    """Zero attempts and negative delays are refused when the policy is made."""
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "30"}, 30.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "11382"}, 11382.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "1e12"}, 1e12),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "-100"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "30"}, 0.25),
        ({"retry-after-ms": "NaN", "retry-after": "30"}, 30.0),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after": "Mon, 20 Jul 2026 10:01:30 GMT"}, 90.0),
        ({"retry-after": "Mon, 20 Jul 2026 09:00:00 GMT"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e400"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "Mon, 99 Foo 2026 10:01:30 GMT"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, HTTP dates and retry-after-ms (which wins); garbage is None, the past is 0."""
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_retry(status: int) -> None:
    """Timeouts, rate limits and server errors retry for idempotent calls."""
    assert status_is_retryable(status, creates=False)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_caller_errors_do_not_retry(status: int) -> None:
    """A client error (409 included, unlike the official SDK) is final."""
    assert not status_is_retryable(status, creates=False)
    assert not status_is_retryable(status, creates=True)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, True), (503, True), (500, False), (502, False), (504, False), (408, False)],
)
def test_create_retries_only_where_no_batch_was_made(status: int, expected: bool) -> None:
    """Create retries on 429 and 503 only: a 500/502/504/408 may hide a batch that was made."""
    assert status_is_retryable(status, creates=True) is expected


def test_retry_after_date_is_measured_from_the_response_date() -> None:
    """An HTTP-date Retry-After counts from the server's Date header, not the local clock."""
    headers = {
        "retry-after": "Sun, 09 Nov 2025 01:20:49 GMT",
        "date": "Sat, 08 Nov 2025 22:11:07 GMT",
    }
    assert parse_retry_after(headers) == 11382.0
    assert parse_retry_after({**headers, "date": "garbage"}, now=NOW) == 0.0
    assert parse_retry_after(headers, now=NOW) == 0.0  # an explicit now wins
