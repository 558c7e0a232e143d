"""The watcher's decisions, without IO: what to poll when, and which events follow.

`Tracker` holds one `TrackedBatch` per watched batch and a schedule. The driver
(`_watcher.py`) asks it what is due (`due`), performs those requests, and hands
back each outcome (`observed`, `swept`, `failed`, `rate_limited`, `gone`). Each
outcome returns the events to deliver, already checked against the invariants:
exactly one final event per batch and nothing after it, never backwards (see
`_events.classify`), never twice for the same snapshot. Time is an argument
(``now``, seconds on any monotonic clock) and randomness comes from an injected
`random.Random`, so every decision is reproducible in a test.

Polling cadence. Each batch polls on its own interval, between
``min_interval`` and ``max_interval``: back to the minimum whenever a poll
brings an event (things are moving), multiplied by ``backoff_factor`` when it
brings none (idle batches cost less and less). Every wait is jittered by
``±jitter`` so that pollers never fall into lockstep, and batches added together
start spread over ``stagger`` seconds instead of in one burst.

List sweep. An account has at most five active batches, and one
``GET /analyze/batches?status=pending&status=processing&status=canceling``
returns them all. In sweep mode that one request refreshes every active
watched batch; a watched batch missing from the answer has left the active set
(or never was in it) and gets one individual GET to learn how it ended. Sweep
mode pays once two or more open batches are watched and a sweep takes fewer
requests (pages) than there are open batches; ``strategy`` forces either mode.

The sweep is an optimisation and never the only source of truth. A batch
the sweep keeps listing still gets an individual GET at least every
``VERIFY_INTERVALS`` times ``max_interval`` (a stale list cannot hide its end),
and a sweep that fails (other than by a 429 or an auth error) suspends sweeping
for a while: every batch falls back to its own polls meanwhile.

Failures (`failed`) are classified by `_retry.classify_failure`, and each kind
has one rule. A 429 pauses everything until its ``Retry-After`` has passed, but
never for less than ``min_interval`` doubled per 429 in a row (up to
``max_interval``), so a server that answers ``Retry-After: 0`` is not
hammered. Auth failures and a wrong base URL end the batch with ``error``
(auth from a sweep ends every open batch); the API's own 404 ends it with
``gone``. Transient failures reschedule the batch with exponential backoff and
no event; answers that make no sense (undecodable, another batch's object, an
unexpected 4xx or redirect) do too, until ``max_decode_failures`` of them in a
row end the batch with ``error``, as do ``max_failures`` failures of any kind
in a row.

No schedule is ever in the past: every time handed to the schedule is at
least ``now``, so nothing is polled back to back because a slow request made
its planned time pass.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from ._errors import RateLimitError
from ._events import NO_RANK, STATUS_RANK, Event, EventKind, classify
from ._models import Batch
from ._retry import Failure, PollPolicy, classify_failure

VERIFY_INTERVALS: Final = 3
"""A batch that sweeps keep listing still gets its own GET this many ``max_interval``s apart."""

MAX_SWEEP_SUSPENSION_INTERVALS: Final = 16
"""A failing sweep is suspended for ``max_interval`` doubling per failure, up to this many."""


class Acknowledged(Protocol):
    """What a state store holds of one batch (a `StoredBatch` is one)."""

    @property
    def snapshot(self) -> Batch | None:
        """The last snapshot the consumer acknowledged."""
        ...

    @property
    def final(self) -> bool:
        """Whether that acknowledged event was the batch's final one."""
        ...


class Strategy(enum.StrEnum):
    """How the watcher refreshes batches."""

    AUTO = "auto"
    """Sweep when it saves requests, per-ID polling otherwise."""
    PER_ID = "per_id"
    """One GET per batch per poll."""
    SWEEP = "sweep"
    """A list sweep of the active batches, plus one GET per batch that left them."""


class _Sweep(enum.Enum):
    SWEEP = "sweep"


SWEEP = _Sweep.SWEEP
"""The action `Tracker.due` returns for a list sweep (the others are batch IDs)."""

Action = str | _Sweep


class TrackedBatch(msgspec.Struct, kw_only=True):
    """What the tracker knows of one batch; msgspec-encodable so a store can keep it."""

    batch_id: str
    last: Batch | None = None
    final: bool = False
    floor: int = NO_RANK
    """The highest known status rank delivered (see `_events.rank`)."""
    next_poll_at: float = math.inf
    verify_by: float = math.inf
    """Its own GET is due by then, however often sweeps list it."""
    interval: float = 0.0
    failures: int = 0
    bad_answers: int = 0


@dataclass(slots=True)
class SweepSchedule:
    """The list sweep's own schedule, beside the per-batch heap."""

    active: bool = False
    """Whether the tracker refreshes by sweep now (see `Tracker._wants_sweep`)."""
    in_flight: bool = False
    at: float = math.inf
    """When the next sweep is due."""
    interval: float = 0.0
    failures: int = 0
    """Sweeps failed in a row."""
    suspended_until: float = -math.inf
    """No sweep before then: the last one failed, batches poll on their own."""
    pages: int = 1
    """Requests the last sweep took."""
    refresh_pending: bool = False
    """A refresh came while a sweep was in flight: sweep again once it answers."""


class Tracker:
    """The sans-IO polling rules for many batches. Not thread-safe; one driver owns it."""

    def __init__(
        self,
        policy: PollPolicy | None = None,
        *,
        strategy: Strategy = Strategy.AUTO,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or PollPolicy()
        self.strategy = Strategy(strategy)
        self._rng = rng or random.Random()
        self._batches: dict[str, TrackedBatch] = {}
        self._open = 0
        self._heap: list[tuple[float, int, str]] = []
        self._sequence = 0
        self._in_flight: set[str] = set()
        self._paused_until = -math.inf
        self._rate_limits = 0  # 429s in a row: each pause is at least a backoff of these
        self._sweep = SweepSchedule(interval=self.policy.min_interval)
        self._verify_after = VERIFY_INTERVALS * self.policy.max_interval
        # Refreshes asked for while the request they would speed up was already
        # in flight: that answer may predate the change, so poll again at once.
        self._refresh_pending: set[str] = set()

    # -- membership -------------------------------------------------------------

    def add(
        self, batch_id: str, now: float, *, last: Batch | None = None, final: bool = False
    ) -> bool:
        """Start watching; False if the batch is already tracked (open or final).

        ``last`` and ``final`` restore what a consumer acknowledged before a
        restart: the next snapshot is diffed against ``last``, and a ``final``
        batch is known but never polled nor reported again.
        """
        if batch_id in self._batches:
            return False
        state = TrackedBatch(batch_id=batch_id, interval=self.policy.min_interval)
        self._batches[batch_id] = state
        self._restore(state, last, final=final)
        if final:
            return True
        self._open += 1
        first = now + self._rng.uniform(0.0, self.policy.stagger)
        state.verify_by = first + self._verify_after
        if self._sweep.active:
            self._sweep.at = min(self._sweep.at, first)
            self._defer_to_sweep(state, now)
        else:
            self._schedule(state, first)
        return True

    def discard(self, batch_id: str) -> bool:
        """Stop watching without an event; False if it was not tracked."""
        state = self._batches.pop(batch_id, None)
        self._refresh_pending.discard(batch_id)
        if state is None:
            return False
        if not state.final:
            self._open -= 1
        self._in_flight.discard(batch_id)
        return True

    def reset(self, batch_id: str, now: float, *, last: Batch | None, final: bool) -> None:
        """Replace a tracked batch's view with ``last``/``final`` (from a shared store) and
        poll it now unless final. A replica calls this when it takes a batch over."""
        state = self._batches.get(batch_id)
        if state is None:
            self.add(batch_id, now, last=last, final=final)
            return
        if state.final != final:
            self._open += -1 if final else 1
        self._restore(state, last, final=final)
        state.failures = state.bad_answers = 0
        state.interval = self.policy.min_interval
        if final:
            state.next_poll_at = math.inf
        else:
            state.verify_by = now + self._verify_after
            self._schedule(state, now)

    def leases_wanted(
        self,
        records: Mapping[str, Acknowledged],
        held: AbstractSet[str],
        now: float,
        *,
        resume: bool,
    ) -> list[str]:
        """A replica's lease round, first half: reconcile with the shared store's ``records``
        and return the batch IDs to claim leases on (the open ones, then those held).

        With ``resume``, every batch the store holds unfinished is watched. A batch that
        another replica ended (its final event acknowledged in the store) while this one did
        not hold it is closed here without an event: its end was delivered once, elsewhere.
        """
        if resume:
            for batch_id, record in records.items():
                if not record.final:
                    self.add(batch_id, now, last=record.snapshot)
        for state in list(self.open_batches()):
            kept = records.get(state.batch_id)
            if kept is not None and kept.final and state.batch_id not in held:
                self.reset(state.batch_id, now, last=kept.snapshot, final=True)
        wanted = [s.batch_id for s in self.open_batches()]
        return wanted + sorted(held - set(wanted))

    def leases_taken(
        self, taken: Iterable[str], records: Mapping[str, Acknowledged], now: float
    ) -> None:
        """A lease round, second half: for each batch newly ``taken`` over, continue from what
        the store says (another replica may have delivered, and had acknowledged, events
        meanwhile), not from this tracker's own view."""
        for batch_id in sorted(taken):
            kept = records.get(batch_id)
            if kept is not None:
                self.reset(batch_id, now, last=kept.snapshot, final=kept.final)

    def skip(self, batch_id: str, until: float) -> None:
        """Give back a due poll unsent (another replica holds the batch); retry at ``until``."""
        self._in_flight.discard(batch_id)
        state = self._live_state(batch_id)
        if state is not None:
            self._schedule(state, until)

    def refresh(self, now: float, batch_id: str | None = None) -> None:
        """Poll one open batch, or every open one, as soon as the limits allow."""
        if batch_id is None and self._sweep.active:
            if self._sweep.in_flight:
                self._sweep.refresh_pending = True
            self._sweep.at = min(self._sweep.at, now)
            return
        states = self.open_batches() if batch_id is None else [self._live_state(batch_id)]
        for state in [s for s in states if s is not None]:
            if state.batch_id in self._in_flight:
                self._refresh_pending.add(state.batch_id)
            else:
                self._schedule(state, now)

    # -- planning ---------------------------------------------------------------

    def due(self, now: float) -> list[Action]:
        """The requests to make now, each marked in flight until its outcome comes back."""
        if now < self._paused_until:
            return []
        self._choose_mode(now)
        actions: list[Action] = []
        sweep = self._sweep
        if sweep.active and not sweep.in_flight and sweep.at <= now:
            sweep.in_flight = True
            actions.append(SWEEP)
        while self._heap and self._heap[0][0] <= now:
            when, _, batch_id = heapq.heappop(self._heap)
            if self._is_current_entry(when, batch_id):
                self._in_flight.add(batch_id)
                actions.append(batch_id)
        return actions

    def next_wakeup(self) -> float | None:
        """When something next comes due, or None when nothing is scheduled."""
        heap = self._heap
        while heap and not self._is_current_entry(heap[0][0], heap[0][2]):
            heapq.heappop(heap)
        sweep = self._sweep
        sweep_due = sweep.active and not sweep.in_flight and self._open
        if heap:
            wake_at = min(heap[0][0], sweep.at) if sweep_due else heap[0][0]
        elif sweep_due:
            wake_at = sweep.at
        else:
            return None
        return max(wake_at, self._paused_until)

    @property
    def paused_until(self) -> float:
        """Nothing is due before this time (a 429's Retry-After, or its backoff floor)."""
        return self._paused_until

    # -- outcomes ---------------------------------------------------------------

    def observed(self, batch_id: str, snapshot: Batch, now: float) -> list[Event]:
        """A GET of ``batch_id`` answered ``snapshot`` (whose ID the client checked)."""
        self._in_flight.discard(batch_id)
        state = self._live_state(batch_id)
        if state is None:
            return []
        self._rate_limits = 0
        state.verify_by = now + self._verify_after
        events = self._apply(state, snapshot)
        if state.final:
            self._refresh_pending.discard(batch_id)
        elif batch_id in self._refresh_pending:
            self._refresh_pending.discard(batch_id)
            self._schedule(state, now)
        elif self._sweep.active:
            self._defer_to_sweep(state, now)
        else:
            self._schedule_after_poll(state, now, moved=bool(events))
        return events

    def swept(self, snapshots: Iterable[Batch], pages: int, now: float) -> list[Event]:
        """A list sweep of the active batches answered ``snapshots`` in ``pages`` requests."""
        sweep = self._sweep
        sweep.in_flight = False
        sweep.failures = 0
        sweep.pages = max(1, pages)
        self._rate_limits = 0
        events: list[Event] = []
        present: set[str] = set()
        for snapshot in snapshots:
            state = self._live_state(snapshot.batch_id)
            if state is not None:
                present.add(snapshot.batch_id)
                events += self._apply(state, snapshot)
        sweep.interval = self._next_interval(sweep.interval, moved=bool(events))
        sweep.at = now + self._jittered(sweep.interval)
        if sweep.refresh_pending:
            sweep.refresh_pending = False
            sweep.at = now
        for state in self.open_batches():
            if state.batch_id in present:
                self._defer_to_sweep(state, now)
            elif state.batch_id not in self._in_flight:
                self._schedule(state, now)  # it left the active list: learn how it ended
        return events

    def failed(self, action: Action, error: BaseException, now: float) -> list[Event]:
        """The request for ``action`` failed with ``error``; see the module docstring."""
        if isinstance(error, RateLimitError):
            self._pause(action, error.retry_after, now)
            return []
        if action is SWEEP:
            return self._sweep_failed(error, classify_failure(error), now)
        self._in_flight.discard(action)
        state = self._live_state(action)
        if state is None:
            return []
        state.verify_by = now + self._verify_after
        return self._poll_failed(state, error, classify_failure(error), now)

    def give_up_all(self, error: BaseException) -> list[Event]:
        """End every open batch with an ``error`` event (the watcher's deadline passed)."""
        return [self._finish(s, EventKind.ERROR, error) for s in list(self.open_batches())]

    # -- views ------------------------------------------------------------------

    @property
    def open_count(self) -> int:
        """Tracked batches without a final event yet."""
        return self._open

    @property
    def tracked_count(self) -> int:
        """Tracked batches, final ones included (until discarded)."""
        return len(self._batches)

    @property
    def in_flight_count(self) -> int:
        """Requests handed out by `due` whose outcome has not come back."""
        return len(self._in_flight) + int(self._sweep.in_flight)

    @property
    def sweeping(self) -> bool:
        """Whether the last planning chose the list sweep."""
        return self._sweep.active

    def tracked(self, batch_id: str) -> TrackedBatch | None:
        """What the tracker holds of a batch (a live object: do not modify it)."""
        return self._batches.get(batch_id)

    def open_batches(self) -> Iterable[TrackedBatch]:
        """The tracked batches without a final event (live objects: do not modify)."""
        return (s for s in self._batches.values() if not s.final)

    # -- internals ----------------------------------------------------------------

    def _restore(self, state: TrackedBatch, last: Batch | None, *, final: bool) -> None:
        state.last, state.final = last, final
        state.floor = NO_RANK if last is None else STATUS_RANK.get(last.status, NO_RANK)

    def _apply(self, state: TrackedBatch, snapshot: Batch) -> list[Event]:
        state.failures = state.bad_answers = 0
        kind = classify(state.last, snapshot, state.floor)
        if kind is None:
            return []
        event = Event(kind, state.batch_id, snapshot, state.last)
        state.last = snapshot
        state.floor = max(state.floor, STATUS_RANK.get(snapshot.status, NO_RANK))
        if kind is EventKind.DONE:
            self._close(state)
        return [event]

    def _finish(self, state: TrackedBatch, kind: EventKind, error: BaseException) -> Event:
        if kind is EventKind.GONE:
            event = Event(kind, state.batch_id, None, state.last, error)
        else:
            event = Event(kind, state.batch_id, state.last, None, error)
        self._close(state)
        return event

    def _close(self, state: TrackedBatch) -> None:
        # The final event carries the last snapshot; an ended batch keeps only a
        # small tombstone, so a long-running service's memory grows slowly.
        state.final = True
        state.last = None
        state.next_poll_at = math.inf
        self._open -= 1

    def _live_state(self, batch_id: str) -> TrackedBatch | None:
        state = self._batches.get(batch_id)
        return None if state is None or state.final else state

    def _pause(self, action: Action, retry_after: float | None, now: float) -> None:
        """A 429: pause everything, at least for a backoff of the 429s in a row."""
        self._rate_limits += 1
        ceiling = self.policy.min_interval * 2.0 ** min(self._rate_limits - 1, 30)
        # Jittered upwards only: the floor is the point, the spread keeps a fleet apart.
        wait = min(self.policy.max_interval, ceiling) * self._rng.uniform(
            1.0, 1.0 + self.policy.jitter
        )
        if retry_after is not None:
            wait = max(wait, retry_after)
        self._paused_until = max(self._paused_until, now + wait)
        if action is SWEEP:
            self._sweep.in_flight = False
            self._sweep.at = self._paused_until
            return
        self._in_flight.discard(action)
        state = self._live_state(action)
        if state is not None:
            self._schedule(state, self._paused_until)

    def _poll_failed(
        self, state: TrackedBatch, error: BaseException, failure: Failure, now: float
    ) -> list[Event]:
        if failure is Failure.GONE:
            return [self._finish(state, EventKind.GONE, error)]
        if failure in (Failure.UNAUTHORIZED, Failure.MISCONFIGURED):
            return [self._finish(state, EventKind.ERROR, error)]
        state.failures += 1
        state.bad_answers = state.bad_answers + 1 if failure is Failure.BAD_ANSWER else 0
        if self._gives_up(state):
            return [self._finish(state, EventKind.ERROR, error)]
        self._schedule(state, now + self._backoff(state.failures))
        return []

    def _sweep_failed(self, error: BaseException, failure: Failure, now: float) -> list[Event]:
        """A sweep failed: auth ends every open batch; anything else suspends sweeping."""
        sweep = self._sweep
        sweep.in_flight = False
        if failure is Failure.UNAUTHORIZED:
            return [self._finish(s, EventKind.ERROR, error) for s in list(self.open_batches())]
        sweep.failures += 1
        doublings = min(2.0 ** (sweep.failures - 1), MAX_SWEEP_SUSPENSION_INTERVALS)
        sweep.suspended_until = now + self.policy.max_interval * doublings
        self._choose_mode(now)  # every batch polls on its own meanwhile
        return []

    def _choose_mode(self, now: float) -> None:
        sweep = self._sweep
        if self.strategy is Strategy.PER_ID and not sweep.active:
            return  # never sweeps: spare the check on every `due`
        sweeping = self._wants_sweep(now)
        if sweeping == sweep.active:
            return
        sweep.active = sweeping
        if sweeping:
            sweep.at = now
            sweep.interval = self.policy.min_interval
            for state in self.open_batches():
                self._defer_to_sweep(state, now)
        else:
            for state in self.open_batches():
                if state.next_poll_at > now + state.interval:
                    self._schedule(state, now + self._rng.uniform(0.0, self.policy.stagger))

    def _wants_sweep(self, now: float) -> bool:
        if now < self._sweep.suspended_until:
            return False
        if self.strategy is Strategy.SWEEP:
            return self._open > 0
        if self.strategy is Strategy.PER_ID:
            return False
        return self._open >= 2 and self._sweep.pages < self._open

    def _schedule(self, state: TrackedBatch, when: float) -> None:
        if state.batch_id in self._in_flight:
            return  # its outcome will schedule it
        state.next_poll_at = when
        self._sequence += 1
        heapq.heappush(self._heap, (when, self._sequence, state.batch_id))

    def _schedule_after_poll(self, state: TrackedBatch, now: float, *, moved: bool) -> None:
        state.interval = self._next_interval(state.interval, moved=moved)
        self._schedule(state, now + self._jittered(state.interval))

    def _defer_to_sweep(self, state: TrackedBatch, now: float) -> None:
        # The sweep refreshes it; its own poll stays scheduled as a safety net in
        # case sweeps stop, and never later than `verify_by`, so a list that keeps
        # showing an old snapshot cannot hide the batch's end.
        when = min(max(self._sweep.at, now) + self.policy.max_interval, state.verify_by)
        self._schedule(state, max(when, now))

    def _is_current_entry(self, when: float, batch_id: str) -> bool:
        state = self._batches.get(batch_id)
        return (
            state is not None
            and not state.final
            and state.next_poll_at == when
            and batch_id not in self._in_flight
        )

    def _next_interval(self, interval: float, *, moved: bool) -> float:
        if moved:
            return self.policy.min_interval
        return min(self.policy.max_interval, interval * self.policy.backoff_factor)

    def _jittered(self, interval: float) -> float:
        spread = self.policy.jitter
        return interval * self._rng.uniform(1.0 - spread, 1.0 + spread)

    def _backoff(self, failures: int) -> float:
        ceiling = min(
            self.policy.max_interval, self.policy.min_interval * 2.0 ** min(failures - 1, 30)
        )
        return self._rng.uniform(ceiling / 2.0, ceiling)

    def _gives_up(self, state: TrackedBatch) -> bool:
        if state.bad_answers >= self.policy.max_decode_failures:
            return True
        limit = self.policy.max_failures
        return limit is not None and state.failures >= limit
