"""The simulator's webhook sender: signed POSTs of the outbox's deliveries, with seeded faults.

`WebhookSender` owns an aiohttp client session (open while the simulator
serves). `WebhookSender.deliver_due` makes every attempt that is due now:
endpoints are served side by side, each one's deliveries in order. `run` is
the background loop a started simulator keeps in its task group: deliver,
then sleep until the outbox's next due time, or until the account changes (a
create or a cancel moves the schedule), whichever comes first.

`WebhookFaults` makes the sender misbehave on purpose, at seeded rates per
attempt: a wrong MAC or a timestamp an hour old (a receiver answers 401, so
the attempt fails and is retried), or, after a delivery succeeded, the same
event sent once more (a receiver should answer it as a duplicate).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import anyio

from ..webhooks import SIGNATURE_HEADER, sign
from ._sim_account import SimulatedAccount
from ._sim_outbox import Delivery, Outbox

STALE_SECONDS = 3600
"""How old a stale-timestamp fault's ``t=`` is: far beyond the usual 300 s tolerance."""
_MIN_WAIT = 0.001  # loop seconds; keeps a rounding error in a scaled clock from spinning


@dataclass(frozen=True, slots=True)
class WebhookFaults:
    """Rates (0 to 1, per attempt) of deliberate webhook misbehaviour; see the module notes."""

    bad_signature: float = 0.0
    stale_timestamp: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.bad_signature, self.stale_timestamp, self.duplicate)
        if not all(0.0 <= rate <= 1.0 for rate in rates) or sum(rates[:2]) > 1.0:
            raise ValueError(
                "webhook fault rates must be 0 to 1, and the two signature ones 1 at most"
            )


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One POST the simulator made (`Simulator.webhook_log`).

    ``fault`` is ``"bad_signature"``, ``"stale_timestamp"``, ``"duplicate"``
    (a resend of a delivered event) or None; ``status`` the HTTP status, or
    None when no answer came (``error`` says why); ``at`` the simulator's clock.
    """

    event_id: str
    type: str
    batch_id: str
    url: str
    attempt: int
    fault: str | None
    status: int | None
    error: str | None
    at: float

    @property
    def accepted(self) -> bool:
        """The endpoint answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    """Sends the outbox's deliveries for one simulated account.

    ``stamp`` is the Unix time used for ``t=``; ``rate`` converts simulator
    seconds into event-loop seconds for sleeping (None: the clock is not tied
    to the loop, so poll every second of loop time).
    """

    def __init__(
        self,
        outbox: Outbox,
        account: SimulatedAccount,
        *,
        secret: str,
        faults: WebhookFaults,
        seed: int,
        stamp: Callable[[], float],
        timeout: float = 10.0,
    ) -> None:
        self._outbox = outbox
        self._account = account
        self._key = secret
        self._faults = faults
        self._rng = random.Random(f"webhook-faults-{seed}")
        self._stamp = stamp
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._lock: anyio.Lock | None = None
        self._changed: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._in_flight = 0
        self.log: list[WebhookAttempt] = []

    async def open(self) -> None:
        """Open the client session."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout), raise_for_status=False
        )

    async def close(self) -> None:
        """Close the client session; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def changed(self) -> None:
        """The account changed: recompute the schedule now (wakes `run`)."""
        if self._changed is not None:
            self._changed.set()

    @property
    def busy(self) -> bool:
        """A delivery is queued or an attempt is in flight."""
        return bool(self._outbox.pending) or self._in_flight > 0

    async def deliver_due(self) -> int:
        """Make every attempt due now; returns how many POSTs were made."""
        if self._session is None:
            raise RuntimeError("webhooks are sent only while the simulator runs")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            now = self._account.now()
            self._outbox.collect(self._account.store.visible(now), now, self._account.wall)
            due = self._outbox.due(now)
            by_url: dict[str, list[Delivery]] = {}
            for delivery in due:
                by_url.setdefault(delivery.url, []).append(delivery)
            posts = [0]
            self._in_flight += len(due)
            try:
                async with anyio.create_task_group() as group:
                    for deliveries in by_url.values():
                        group.start_soon(self._send_in_order, deliveries, posts)
            finally:
                self._in_flight -= len(due)
                self._notify_progress()
            return posts[0]

    async def run(self, rate: float | None) -> None:
        """Deliver whatever falls due, until cancelled or the session is closed (`close`)."""
        while self._session is not None:
            # A fresh event before delivering: a change made while we send still wakes us.
            self._changed = anyio.Event()
            await self.deliver_due()
            wait = self._wait(rate)
            with anyio.move_on_after(wait):
                await self._changed.wait()

    async def settled(self) -> None:
        """Return once nothing is queued or in flight (deliveries not yet due do not count)."""
        while self.busy:
            self._progress = self._progress or anyio.Event()
            await self._progress.wait()

    def _notify_progress(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.set()

    def _wait(self, rate: float | None) -> float:
        if rate is None:
            return 1.0
        now = self._account.now()
        due = self._outbox.next_time(self._account.store.visible(now))
        if due is None:
            return math.inf
        return max(_MIN_WAIT, (due - now) / rate)

    async def _send_in_order(self, deliveries: Sequence[Delivery], posts: list[int]) -> None:
        faults = [self._draw() for _ in deliveries]  # drawn up front: seeded, whatever the IO order
        for delivery, (fault, duplicate) in zip(deliveries, faults, strict=True):
            attempt = await self._post(delivery, fault, delivery.attempts + 1)
            posts[0] += 1
            self._outbox.settle(delivery, self._account.now(), _failure(attempt))
            if attempt.accepted and duplicate:
                await self._post(delivery, "duplicate", delivery.attempts)
                posts[0] += 1

    def _draw(self) -> tuple[str | None, bool]:
        faults = self._faults
        roll = self._rng.random()
        fault = None
        if roll < faults.bad_signature:
            fault = "bad_signature"
        elif roll < faults.bad_signature + faults.stale_timestamp:
            fault = "stale_timestamp"
        return fault, self._rng.random() < faults.duplicate

    async def _post(self, delivery: Delivery, fault: str | None, attempt: int) -> WebhookAttempt:
        assert self._session is not None  # noqa: S101 - deliver_due checked it
        stamp = int(self._stamp())
        key = self._key
        if fault == "stale_timestamp":
            stamp -= STALE_SECONDS
        elif fault == "bad_signature":
            key = "not-" + key  # a well-formed header with a MAC no receiver accepts
        headers = {SIGNATURE_HEADER: sign(delivery.body, key, timestamp=max(0, stamp))}
        headers["Content-Type"] = "application/json"
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(delivery.url, data=delivery.body, headers=headers) as r:
                status = r.status
                await r.read()
        except TimeoutError:
            error = f"timed out after {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"connection failed: {exc}"
        result = WebhookAttempt(
            event_id=delivery.event_id,
            type=delivery.type,
            batch_id=delivery.batch_id,
            url=delivery.url,
            attempt=attempt,
            fault=fault,
            status=status,
            error=error,
            at=self._account.now(),
        )
        self.log.append(result)
        return result


def _failure(attempt: WebhookAttempt) -> str | None:
    """What the batch record's ``last_error`` says about a failed attempt; None when it worked."""
    if attempt.accepted:
        return None
    return attempt.error if attempt.status is None else f"HTTP {attempt.status}"
