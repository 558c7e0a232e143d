"""The retry and poll policies, as pure values and functions: which failures retry, how long to
wait, and how often a watcher polls (`PollPolicy`).

Nothing here sleeps, reads a clock or does IO. The transport asks two questions
after each failed attempt (may it retry? how long first?) and acts on the
answers, so every rule here is tested without waiting. The watcher, which
retries on its own schedule, asks a third: what kind of failure was it
(`classify_failure`)?

Backoff is exponential with *full jitter*: a uniform draw in ``[0, cap]`` where
the cap doubles each attempt up to ``max_delay``. Full jitter spreads clients
that failed together across the whole window, which is what keeps a fleet of
pollers from hitting a recovering server in lockstep.

A server-named wait (``retry-after-ms``, else ``Retry-After`` in seconds or as
an HTTP date) is a floor under the backoff. When it is longer than
``max_retry_after`` the call gives up at once with the wait attached, rather
than sleeping for hours on a daily quota.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    EndpointNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# POST /analyze/batches is not idempotent. Only these answers prove the server
# made no batch: 429 (refused before any work) and 503 (a downstream check failed
# before creation). A timeout, 500 or 504 may hide a batch that was made.
CREATE_RETRYABLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a call retries.

    Attributes:
        max_attempts: attempts in all, the first included; 1 disables retries.
        initial_delay: backoff cap of the first retry, in seconds.
        max_delay: the backoff cap never grows past this.
        max_retry_after: the longest server-named wait we sleep through; a
            longer one raises `RateLimitError` at once.
    """

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """A full-jitter wait before retry ``retry_number`` (1 for the first retry)."""
        exponent = min(retry_number - 1, 62)
        cap = min(self.max_delay, self.initial_delay * 2.0**exponent)
        return rng.uniform(0.0, cap)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How a watcher polls each batch, and how many failures in a row end it.

    The watcher's ``poll=`` option; its cadence keywords (``min_interval`` and
    the rest) are shorthands for the fields of one. Each batch polls between
    ``min_interval`` and ``max_interval`` seconds apart: back to the minimum
    after a poll that brought an event, times ``backoff_factor`` after one
    that did not, every wait jittered by ``±jitter``; batches added together
    start spread over ``stagger`` seconds. ``max_decode_failures`` counts
    answers that make no sense in a row (undecodable bodies, another batch's
    object, unexpected 4xx or redirects); ``max_failures`` counts failures of
    any kind in a row (None: no limit).
    """

    min_interval: float = 5.0
    max_interval: float = 60.0
    backoff_factor: float = 1.5
    jitter: float = 0.1
    stagger: float = 1.0
    max_decode_failures: int = 5
    max_failures: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if self.backoff_factor < 1 or not 0 <= self.jitter < 1 or self.stagger < 0:
            raise ValueError("need backoff_factor >= 1, 0 <= jitter < 1 and stagger >= 0")
        if self.max_decode_failures < 1 or (
            self.max_failures is not None and self.max_failures < 1
        ):
            raise ValueError("failure limits must be at least 1")


def status_is_retryable(status: int, *, creates: bool) -> bool:
    """Whether an error status may be retried; ``creates`` for the non-idempotent create."""
    if creates:
        return status in CREATE_RETRYABLE_STATUSES
    return status in RETRYABLE_STATUSES


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The wait the server asked for, in seconds, or None when it named none.

    ``retry-after-ms`` wins over ``Retry-After``; ``Retry-After`` may be seconds
    or an HTTP date. Garbage, NaN and infinity are ignored (None); negative
    values and dates in the past mean "now" (0.0). A date is measured from
    ``now`` if given, else from the response's own ``Date`` header, so a skewed
    local clock neither stretches nor cuts the wait, else from the local clock.
    """
    millis = _finite_float(headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    return _seconds_until_http_date(
        raw, now or _http_date(headers.get("date")) or datetime.now(UTC)
    )


def _http_date(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _finite_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds_until_http_date(raw: str, now: datetime) -> float | None:
    when = _http_date(raw)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def retry_delay(
    policy: RetryPolicy, retry_number: int, retry_after: float | None, rng: random.Random
) -> float:
    """The wait before retry ``retry_number``: full-jitter backoff, floored by ``retry_after``."""
    delay = policy.backoff(retry_number, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


class Failure(enum.Enum):
    """What a failed watch request means for the batch (or sweep) it was for."""

    RATE_LIMITED = "rate_limited"
    """429: pause every request, then try again."""
    UNAUTHORIZED = "unauthorized"
    """401/403: the key cannot do this; nothing will change that."""
    GONE = "gone"
    """The API's own 404: the batch does not exist (any more)."""
    MISCONFIGURED = "misconfigured"
    """A 404 that is not the API's: the base URL is wrong, not the batch."""
    BAD_ANSWER = "bad_answer"
    """An answer that makes no sense (undecodable, another batch, an unexpected
    status such as 400 or a redirect): retried, but only a few times in a row."""
    TRANSIENT = "transient"
    """The network, a timeout, 408 or 5xx: retried with backoff."""


def classify_failure(error: BaseException) -> Failure:
    """The `Failure` kind of an exception raised by a client call."""
    for error_class, failure in _FAILURE_CLASSES:
        if isinstance(error, error_class):
            return failure
    if isinstance(error, APIStatusError):
        retryable = error.status >= 500 or error.status in RETRYABLE_STATUSES
        return Failure.TRANSIENT if retryable else Failure.BAD_ANSWER
    return Failure.BAD_ANSWER


# Most specific first: EndpointNotFoundError is not a NotFoundError, but order
# keeps the table honest should that change.
_FAILURE_CLASSES: tuple[tuple[type[BaseException], Failure], ...] = (
    (RateLimitError, Failure.RATE_LIMITED),
    (AuthenticationError, Failure.UNAUTHORIZED),
    (PermissionDeniedError, Failure.UNAUTHORIZED),
    (EndpointNotFoundError, Failure.MISCONFIGURED),
    (NotFoundError, Failure.GONE),
    (APIConnectionError, Failure.TRANSIENT),
)
