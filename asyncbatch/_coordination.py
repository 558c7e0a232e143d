"""What a watcher shares with others watching the same account: requests and leases.

TwelveLabs limits requests per account, so watchers in several processes must
share one budget and obey each other's 429s. A `RequestGate` is that shared
door: a watcher awaits `RequestGate.acquire` before every request and reports
each 429 with `RequestGate.rate_limited`. `LocalGate`, the default, is the
door of one watcher: a token bucket and a pause on the event loop clock.

`Leases` split batches between replicas: a watcher given leases polls, and
reports, only the batches it holds; a batch whose holder stops renewing is
taken over by another replica, which resumes from the shared `StateStore`.
The Redis implementations live in `asyncbatch.redis`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import anyio

from ._budget import TokenBucket

DEFAULT_PAUSE = 30.0  # a 429 without Retry-After pauses this long


@runtime_checkable
class RequestGate(Protocol):
    """Admission of requests: a shared budget and shared 429 pauses."""

    async def acquire(self) -> None:
        """Return once a request may be sent now: no pause in force, a budget token taken."""
        ...

    async def rate_limited(self, retry_after: float | None) -> None:
        """A 429 arrived: pause every request through this gate for ``retry_after`` seconds."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Exclusive, expiring claims on batches, shared by replicas."""

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts unless renewed."""
        ...

    async def claim(self, batch_ids: Sequence[str]) -> set[str]:
        """Take or renew the leases of ``batch_ids`` where free or ours; the ones held now."""
        ...

    async def release(self, batch_ids: Iterable[str]) -> None:
        """Give up leases we hold, so another replica can take them at once."""
        ...


class LocalGate:
    """The gate of one watcher: ``requests_per_second`` (None: unlimited) and local pauses."""

    def __init__(
        self, requests_per_second: float | None = None, burst: float | None = None
    ) -> None:
        self._rate = requests_per_second
        self._burst = burst
        self._bucket: TokenBucket | None = None
        self._paused_until = -float("inf")

    def __repr__(self) -> str:
        return f"<asyncbatch.LocalGate requests_per_second={self._rate}>"

    def open_now(self) -> bool:
        """True when `acquire` would return at once without looking at the clock: no budget
        and never paused (the common case), so a caller may skip awaiting it."""
        return self._rate is None and self._paused_until == -float("inf")

    async def acquire(self) -> None:
        if self.open_now():
            return  # the common case: no budget and never paused; skip the clock
        while True:
            # Loops, not single sleeps: another 429 may extend the pause meanwhile.
            while (pause := self._paused_until - anyio.current_time()) > 0:  # noqa: ASYNC110
                await anyio.sleep(pause)
            bucket = self._budget()
            if bucket is None or bucket.take(anyio.current_time()):
                return
            await anyio.sleep(bucket.delay(anyio.current_time()))

    async def rate_limited(self, retry_after: float | None) -> None:
        wait = DEFAULT_PAUSE if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, anyio.current_time() + wait)

    def _budget(self) -> TokenBucket | None:
        if self._rate is not None and self._bucket is None:
            # Made on first use, so that it starts full on the clock it runs on.
            self._bucket = TokenBucket(self._rate, self._burst, now=anyio.current_time())
        return self._bucket
