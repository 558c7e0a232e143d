"""A token bucket for the watcher's request budget, as pure arithmetic on ``now``.

TwelveLabs limits requests per account (per minute and per day), so a watcher
shares one budget across all its requests. The bucket holds up to ``burst``
tokens and refills at ``rate`` tokens per second; each request takes one.
"""

from __future__ import annotations

import math

# The shortest wait `delay` names: a shorter one can vanish in the clock's float
# rounding (now + delay == now), and a caller waiting for a token would spin.
_MIN_WAIT = 1e-6


class TokenBucket:
    """Allows ``rate`` requests per second on average and ``burst`` at once."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number of requests per second")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._updated = now

    def delay(self, now: float) -> float:
        """Seconds to wait before a token is available (0.0 when one is)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return max((1.0 - self._tokens) / self.rate, _MIN_WAIT)

    def take(self, now: float) -> bool:
        """Take a token if one is available."""
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)
