"""The watcher: the IO driver around the `Tracker`.

Theory of operation. ``async with Watcher(...)`` opens a task group that the
``async with`` owns. In it, one scheduler task asks the tracker what is due and
queues those actions for ``max_concurrency`` worker tasks, which is what
bounds the requests in flight: a fixed pool, because spawning a task and
taking a limiter slot per request cost more CPU than the request itself. A
worker passes the `RequestGate` (the budget and 429 pauses) right before it
sends, feeds the outcome back into the tracker and appends the resulting events
to a memory stream *synchronously*, so events leave in exactly the order the
tracker produced them. The consumer's ``async for`` reads that stream from
outside the task group: nothing is ever yielded from inside it. The scheduler
sleeps until the tracker's next due time and is woken early only when a worker,
`add` or `refresh` makes something due sooner.

Backpressure. The stream itself is unbounded so that appending never awaits
(which would let another task's events overtake), but a worker takes no new
action until the stream holds fewer than ``buffer_size`` events. A slow
consumer therefore slows polling, and memory stays bounded by ``buffer_size``
plus a few events per request in flight.

Rate limits. A 429 pauses every request until its ``Retry-After`` has passed,
however long; queued actions wait out the pause too, so
none is sent while paused. Retries are the watcher's own (the client's retry
policy is off for its requests): transient failures reschedule the batch with
backoff and produce no event.

Acknowledgement and restarts. With a ``state`` store, an event counts as
delivered once the consumer acknowledges it: by default asking for the next
event acknowledges the previous one (``auto_ack``); with ``auto_ack=False``
the consumer calls `Watcher.ack` itself, for example after writing the event
somewhere durable. The store keeps, per batch, the last acknowledged snapshot;
a watcher started on the same store diffs against it, so unacknowledged
changes come again, changes made while nothing watched are reported, and an
acknowledged final event never comes again (see `_stores`).

Ending. ``stop_when_done=True`` (scripts) ends iteration once every watched
batch has had its final event and the consumer has read them all;
``stop_when_done=False`` (services) keeps iterating until the ``async with``
exits, and batches may be added at any time. A ``timeout`` gives every batch
still open an ``error`` event carrying `WaitTimeoutError`, then ends
iteration. Leaving the ``async with`` cancels every request in flight and
closes nothing that belongs to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import warnings
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypedDict

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._coordination import Leases, LocalGate, RequestGate
from ._errors import AsyncBatchError, InvalidBatchIdError, RateLimitError, WaitTimeoutError
from ._events import Event, EventKind
from ._models import ACTIVE_STATUSES, Batch, check_batch_id, check_not_a_string
from ._retry import NO_RETRY, PollPolicy, RetryPolicy
from ._stores.memory import StateStore, StoredBatch
from ._telemetry import Dispatch, WatchGauges
from ._telemetry import current as telemetry
from ._tracker import SWEEP, Action, Strategy, Tracker

logger = logging.getLogger("asyncbatch")


class BatchReader(Protocol):
    """The two reads a watcher makes; `Client.batches` is one."""

    async def retrieve(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> Batch:
        """One batch's current snapshot."""
        ...

    def list(
        self,
        *,
        status: Iterable[str] | None = None,
        page_limit: int = ...,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """The account's batches with one of ``status``, a page at a time."""
        ...


class BatchSource(Protocol):
    """What a `Watcher` needs from a client: its ``batches`` reads (`Client` is one)."""

    @property
    def batches(self) -> BatchReader:
        """The reads the watcher polls with."""
        ...


class WatchOptions(TypedDict, total=False):
    """The keyword options of `Watcher`, as `Client.watch`, `Batches.wait` and
    `Batches.create_and_wait` take them (``**options: Unpack[WatchOptions]``), so that a
    type checker and an editor know each one; `Watcher` documents what each does."""

    max_concurrency: int
    poll: PollPolicy | None
    min_interval: float | None
    max_interval: float | None
    backoff_factor: float | None
    jitter: float | None
    stagger: float | None
    max_decode_failures: int | None
    max_failures: int | None
    requests_per_second: float | None
    burst: float | None
    timeout: float | None
    stop_when_done: bool
    strategy: Strategy | str
    buffer_size: int
    seed: int | None
    state: StateStore | None
    resume: bool
    watch_active: bool
    auto_ack: bool
    gate: RequestGate | None
    leases: Leases | None


class _Alarm:
    """The scheduler's sleep: until a loop time, or until `ring` is called, whichever is first.

    Plain asyncio (a future and one timer handle) instead of an anyio cancel scope around an
    Event: the scheduler sleeps and wakes up to once per poll, and a cancel scope costs
    several times more per pass. Cancelling the sleeping task cancels the future as usual.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = None if when == math.inf else loop.call_at(when, _resolve, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            self._future = None

    def ring(self) -> None:
        """End the current sleep now (nothing if none)."""
        if self._future is not None:
            _resolve(self._future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _WorkLine:
    """Due actions on their way to the workers: handed to an idle worker, else queued.

    A deque and plain asyncio futures rather than an anyio memory stream: it is
    used twice per poll, and a stream's send and receive cost several times more.
    Workers wait in the order they went idle.
    """

    __slots__ = ("_idle", "_ready")

    def __init__(self) -> None:
        self._ready: deque[Action] = deque()
        self._idle: deque[asyncio.Future[Action]] = deque()

    def put(self, action: Action) -> None:
        """Hand ``action`` to the longest-idle worker, or queue it when none is idle."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # a cancelled worker's waiter is skipped
                waiter.set_result(action)
                return
        self._ready.append(action)

    def take(self) -> Action | None:
        """The oldest queued action, or None."""
        return self._ready.popleft() if self._ready else None

    async def handed(self, loop: asyncio.AbstractEventLoop) -> Action:
        """Wait, idle, until `put` hands this worker an action."""
        waiter: asyncio.Future[Action] = loop.create_future()
        self._idle.append(waiter)
        try:
            return await waiter
        finally:
            if not waiter.done():  # cancelled: leave the idle line
                with contextlib.suppress(ValueError):
                    self._idle.remove(waiter)


_MAX_STREAK: Final = 64
"""A worker that found work waiting this many times in a row yields once to the event loop."""
_ENDPOINTS: Final = ("/analyze/batches/{batch_id}", "/analyze/batches")  # [is a sweep]
_PAGE_SIZE: Final = 50
_MAX_SWEEP_PAGES: Final = 4  # 200 batches, where an account has at most 5 active


class _Nudge:
    """Wakes a consumer blocked on the stream so it re-checks whether iteration ended."""


_NUDGE: Final = _Nudge()


@dataclass(frozen=True, slots=True)
class WatcherStatistics:
    """A snapshot of a watcher's counters (`Watcher.statistics`)."""

    tracked: int
    """Batches being watched, final ones included."""
    open: int
    """Batches still without a final event."""
    in_flight: int
    """Requests sent and not yet answered, or waiting for a slot."""
    polls: int
    """Individual ``GET /analyze/batches/{id}`` requests started."""
    sweeps: int
    """List sweeps started (each one or more list pages)."""
    retries: int
    """Requests that failed transiently and were rescheduled."""
    rate_limited: int
    """429 answers, each of which paused all polling."""
    events: int
    """Events handed to the consumer's stream."""
    buffered: int
    """Events waiting for the consumer to read them."""
    paused_until: float | None
    """Loop time until which polling is paused by a 429, or None."""
    sweeping: bool
    """Whether the watcher currently refreshes by list sweep."""
    last_failure: AsyncBatchError | None = None
    """The most recent request failure that was retried (or paused polling), or None."""


class Watcher:
    """Watches many batches and yields their state changes as `Event`s.

    Use ``async with Watcher(client, ids) as watcher: async for event in
    watcher:`` (or ``client.watch(ids)``). See the module documentation for
    the guarantees; each option is keyword-only:

    Args:
        max_concurrency: requests in flight at once.
        poll: the `PollPolicy` (cadence and failure limits; default ``PollPolicy()``).
        min_interval: seconds between polls of a batch while it changes.
        max_interval: the longest wait between polls of an idle batch.
        backoff_factor: how the interval grows per poll that saw no change.
        jitter: each wait is multiplied by a random factor in ``1 ± jitter``.
        stagger: first polls of the initial batches spread over this many seconds.
        max_decode_failures: consecutive undecodable bodies before a batch
            gets an ``error`` event.
        max_failures: consecutive transient failures before a batch gets an
            ``error`` event (None: retry until the timeout).
            The seven keywords above are shorthands: each replaces that field
            of ``poll`` (None keeps the policy's value).
        requests_per_second: a budget shared by all of this watcher's requests
            (None: no budget beyond ``max_concurrency``); shorthand for
            ``gate=LocalGate(requests_per_second, burst)``.
        burst: requests the budget allows at once (default: one second's worth).
        timeout: seconds after entering; batches still open then get an
            ``error`` event with `WaitTimeoutError`, and iteration ends. The
            same word, in the same sense, as ``wait(timeout=)``.
        stop_when_done: end iteration once every batch has had its final event
            (True, for scripts) or run until the ``async with`` exits (False).
        strategy: ``"auto"``, ``"per_id"`` or ``"sweep"`` (see `Strategy`).
        buffer_size: events held for a slow consumer before polling waits.
        seed: seeds the jitter, for reproducible schedules.
        state: a `StateStore` that keeps acknowledged state across restarts.
        resume: also watch every batch in ``state`` that has not ended.
        watch_active: also watch every active batch of the account (one list
            sweep on entry).
        auto_ack: asking for the next event acknowledges the previous one; set
            False to call `ack` yourself.
        gate: a `RequestGate` shared with other watchers (budget and 429
            pauses across processes); default a `LocalGate` of this watcher.
        leases: `Leases` shared with replicas: this watcher polls and reports
            only the batches it holds, taking over those whose holder stopped,
            from the ``state`` store (required with leases).
        deadline: the old name of ``timeout``; deprecated, warns.
    """

    def __init__(
        self,
        client: BatchSource,
        batch_ids: Iterable[str] = (),
        *,
        max_concurrency: int = 8,
        poll: PollPolicy | None = None,
        min_interval: float | None = None,
        max_interval: float | None = None,
        backoff_factor: float | None = None,
        jitter: float | None = None,
        stagger: float | None = None,
        max_decode_failures: int | None = None,
        max_failures: int | None = None,
        requests_per_second: float | None = None,
        burst: float | None = None,
        timeout: float | None = None,
        stop_when_done: bool = True,
        strategy: Strategy | str = Strategy.AUTO,
        buffer_size: int = 64,
        seed: int | None = None,
        state: StateStore | None = None,
        resume: bool = False,
        watch_active: bool = False,
        auto_ack: bool = True,
        gate: RequestGate | None = None,
        leases: Leases | None = None,
        deadline: float | None = None,
    ) -> None:
        if deadline is not None:
            warnings.warn(
                "Watcher(deadline=) is now Watcher(timeout=); deadline= goes in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            if timeout is not None:
                raise TypeError("give timeout= alone (deadline= is its deprecated name)")
            timeout = deadline
        if max_concurrency < 1 or buffer_size < 1:
            raise ValueError("max_concurrency and buffer_size must be at least 1")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        if leases is not None and state is None:
            raise ValueError("replicas share their progress through `state`: pass a store")
        cadence = {
            "min_interval": min_interval,
            "max_interval": max_interval,
            "backoff_factor": backoff_factor,
            "jitter": jitter,
            "stagger": stagger,
            "max_decode_failures": max_decode_failures,
            "max_failures": max_failures,
        }
        given: dict[str, Any] = {k: v for k, v in cadence.items() if v is not None}
        policy = dataclasses.replace(poll or PollPolicy(), **given)
        check_not_a_string(batch_ids, "batch_ids")
        self._batches = client.batches
        self._tracker = Tracker(policy, strategy=Strategy(strategy), rng=random.Random(seed))
        self._pending_ids = list(dict.fromkeys(check_batch_id(b) for b in batch_ids))
        self._workers = max_concurrency
        self._received = 0
        self._sleeping_until = -math.inf
        if gate is not None and requests_per_second is not None:
            raise ValueError("give requests_per_second to the gate, not to the watcher")
        self._gate = gate or LocalGate(requests_per_second, burst)
        # Our own gate can say without a coroutine that it admits a request now.
        self._local_gate = self._gate if type(self._gate) is LocalGate else None
        self._leases = leases
        self._held: set[str] = set()
        self._timeout = timeout
        self._deadline_at: float | None = None
        self._stop_when_done = stop_when_done
        self._buffer_size = buffer_size
        self._stage = "new"
        self._ended = False
        self._crash: BaseException | None = None
        self._alarm = _Alarm()
        self._work_line = _WorkLine()
        self._space = anyio.Event()
        self._last_failure: AsyncBatchError | None = None
        self._counts = {"polls": 0, "sweeps": 0, "retries": 0, "rate_limited": 0, "events": 0}
        self._send: MemoryObjectSendStream[Event | _Nudge] | None = None
        self._receive: MemoryObjectReceiveStream[Event | _Nudge] | None = None
        self._task_group: TaskGroup | None = None
        self._store = state
        self._resume = resume
        self._watch_active = watch_active
        self._auto_ack = auto_ack
        self._unacked: Event | None = None
        self._store_updates: list[tuple[str, bool]] = []  # (batch_id, tracked?) in call order
        self._telemetry: Dispatch | None = None  # the hooks installed at entry
        self._gauges: WatchGauges | None = None

    def __repr__(self) -> str:
        return (
            f"<asyncbatch.Watcher {self._stage} open={self._tracker.open_count} "
            f"tracked={self._tracker.tracked_count}>"
        )

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stage != "new":
            raise RuntimeError("a Watcher can be entered only once")
        self._stage = "running"
        self._loop = asyncio.get_running_loop()
        self._send, self._receive = anyio.create_memory_object_stream[Event | _Nudge](math.inf)
        now = anyio.current_time()
        if self._timeout is not None:
            self._deadline_at = now + self._timeout
        try:
            await self._load_batches(now)
            await self._claim_leases()
        except BaseException:
            self._stage = "closed"
            self._close_streams()
            raise
        self._start_telemetry()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run)
        if self._leases is not None:
            self._task_group.start_soon(self._keep_leases)
        return self

    async def _load_batches(self, now: float) -> None:
        """Track the initial batches, restored from the store where it knows them."""
        ids = list(self._pending_ids)
        if self._watch_active:
            ids += _valid_ids(b.batch_id for b in await self._list_active(_MAX_SWEEP_PAGES))
        records = {r.batch_id: r for r in await self._store.load()} if self._store else {}
        if self._resume:
            ids += [r.batch_id for r in records.values() if not r.final]
        for batch_id in dict.fromkeys(ids):
            record = records.get(batch_id)
            if record is None:
                self._tracker.add(batch_id, now)
            else:
                self._tracker.add(batch_id, now, last=record.snapshot, final=record.final)
        if self._store is not None:
            await self._store.track(b for b in dict.fromkeys(ids) if b not in records)

    def _start_telemetry(self) -> None:
        self._telemetry = telemetry.dispatch
        if self._telemetry is not None:
            self._gauges = WatchGauges(self._telemetry)
            self._gauges.counts(self._tracker.tracked_count, self._tracker.open_count)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The caller's exception, if any, propagates untouched: the task group
        # is exited as if its body ended normally, so nothing wraps it.
        task_group, self._task_group = self._task_group, None
        self._stage = "closed"
        if task_group is None:
            return
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        finally:
            self._close_streams()
            if self._gauges is not None:
                self._gauges.close()
            await self._release_leases()

    def _close_streams(self) -> None:
        if self._send is not None:
            self._send.close()
        if self._receive is not None:
            self._receive.close()

    # -- consumer side --------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._receive is None:
            raise RuntimeError("enter the watcher with `async with` before iterating")
        if self._unacked is not None:
            event, self._unacked = self._unacked, None
            await self.ack(event)
        await self._flush_store_updates()
        while True:
            if self._iteration_over():
                raise StopAsyncIteration
            try:
                item = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._crash is not None:
                    raise self._crash from None
                raise StopAsyncIteration from None
            if isinstance(item, Event):
                self._received += 1
                self._space.set()
                if not self._holds(item.batch_id):
                    continue  # the lease moved on: the new holder reports it from the store
                if self._auto_ack:
                    self._unacked = item
                return item

    def _iteration_over(self) -> bool:
        """In ``stop_when_done`` mode: nothing open and every event read. Decided here,
        on the consumer's side, so a consumer may still `add` after the last event."""
        if not self._stop_when_done or self._tracker.open_count or self._receive is None:
            return False
        if self._buffered():
            return False
        self._ended = True
        return True

    async def ack(self, event: Event) -> None:
        """Acknowledge ``event``: a restarted watcher on the same store will not repeat it.

        Without a ``state`` store this does nothing. Acknowledging an older
        event of a batch after a newer one changes nothing.
        """
        if self._store is None:
            return
        snapshot = event.batch if event.batch is not None else event.previous
        # An `error` is this watcher giving up (deadline, auth, retries), not the
        # batch ending: the batch stays resumable for the next watcher or replica.
        final = event.is_final and event.kind is not EventKind.ERROR
        record = StoredBatch(batch_id=event.batch_id, snapshot=snapshot, final=final)
        await self._store.acknowledge(record)

    async def _flush_store_updates(self) -> None:
        updates, self._store_updates = self._store_updates, []
        if self._store is None:
            return
        for batch_id, tracked in updates:
            if tracked:
                await self._store.track([batch_id])
            else:
                await self._store.forget(batch_id)

    def add(self, batch_id: str) -> None:
        """Start watching another batch; a batch already tracked is left as it is."""
        batch_id = check_batch_id(batch_id)
        if self._stage == "new":
            self._pending_ids.append(batch_id)
            return
        if self._ended or self._stage == "closed":
            raise RuntimeError("this watcher has stopped; start a new one")
        if self._tracker.add(batch_id, anyio.current_time()):
            self._store_updates.append((batch_id, True))
            if self._gauges is not None:
                self._gauges.counts(self._tracker.tracked_count, self._tracker.open_count)
            self._wake_if_sooner()
            return
        state = self._tracker.tracked(batch_id)
        if state is not None and state.final:
            logger.warning(
                "watcher.add(%s): this batch already had its final event, so it is not watched "
                "again; discard() it first to watch it anew",
                batch_id,
            )

    def discard(self, batch_id: str) -> None:
        """Stop watching a batch, without an event. Unknown IDs are ignored."""
        if self._stage == "new":
            self._pending_ids = [b for b in self._pending_ids if b != batch_id]
            return
        if not self._tracker.discard(batch_id):
            return
        self._store_updates.append((batch_id, False))
        if self._gauges is not None:
            self._gauges.forget(batch_id, self._tracker.tracked_count, self._tracker.open_count)
        if self._send is not None and not self._ended:
            self._send.send_nowait(_NUDGE)

    def refresh(self, batch_id: str | None = None) -> None:
        """Poll one batch, or all open ones, as soon as the limits allow.

        Webhook receivers call this when a delivery arrives; polling stays on
        as the safety net.
        """
        if batch_id is not None:
            batch_id = check_batch_id(batch_id)
        if self._stage == "running":
            self._tracker.refresh(anyio.current_time(), batch_id)
            self._wake_if_sooner()

    def statistics(self) -> WatcherStatistics:
        """The watcher's counters right now."""
        paused = self._tracker.paused_until
        return WatcherStatistics(
            tracked=self._tracker.tracked_count,
            open=self._tracker.open_count,
            in_flight=self._tracker.in_flight_count,
            paused_until=paused if paused > anyio.current_time() else None,
            sweeping=self._tracker.sweeping,
            buffered=self._buffered(),
            last_failure=self._last_failure,
            **self._counts,
        )

    # -- scheduler ----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as workers:
                for _ in range(self._workers):
                    workers.start_soon(self._work)
                await self._schedule()
                workers.cancel_scope.cancel()
        except Exception as exc:  # a store failure or a bug: hand it to the consumer
            self._crash = _unwrapped(exc)
        finally:
            self._ended = True
            if self._send is not None:
                self._send.close()

    async def _schedule(self) -> None:
        while True:
            now = self._loop.time()
            if self._deadline_at is not None and now >= self._deadline_at:
                self._emit(self._tracker.give_up_all(WaitTimeoutError(self._deadline_message())))
                return
            self._dispatch(now)
            await self._sleep_until(self._tracker.next_wakeup())

    def _dispatch(self, now: float) -> None:
        """Hand what is due to idle workers, and queue the rest for the busy ones.

        Called by the scheduler when its alarm rings, and by each worker that has
        finished a request: a worker takes work that came due itself, so that the
        scheduler task is not woken once per poll (one pass of the event loop, and
        on a virtual machine a costly sleep and wake-up of the thread).
        """
        if self._deadline_at is not None and now >= self._deadline_at:
            self._alarm.ring()  # the scheduler ends the watch; nothing more is sent
            return
        work_line = self._work_line
        for action in self._tracker.due(now):
            work_line.put(action)

    async def _sleep_until(self, wake_at: float | None) -> None:
        if self._deadline_at is not None:
            wake_at = self._deadline_at if wake_at is None else min(wake_at, self._deadline_at)
        self._sleeping_until = math.inf if wake_at is None else wake_at
        try:
            await self._alarm.sleep_until(self._sleeping_until)
        finally:
            self._sleeping_until = -math.inf

    def _take_due(self) -> None:
        """A worker's part of the scheduler's job: dispatch what is due now, if anything is
        (so `due`, which also picks the refresh mode, runs exactly when the scheduler would
        have been woken for it), and wake the scheduler for what stays scheduled sooner
        than its alarm."""
        now = self._loop.time()
        wake_at = self._tracker.next_wakeup()
        if wake_at is not None and wake_at <= now:
            self._dispatch(now)
            wake_at = self._tracker.next_wakeup()
        if wake_at is not None and wake_at < self._sleeping_until:
            self._alarm.ring()

    def _wake_if_sooner(self) -> None:
        """Wake the scheduler only if an outcome made something due before its alarm."""
        wake_at = self._tracker.next_wakeup()
        if wake_at is not None and wake_at < self._sleeping_until:
            self._alarm.ring()

    # -- requests -----------------------------------------------------------------

    async def _work(self) -> None:
        """One worker: takes the next action (what is queued, else what is due, else
        waits to be handed one), waits for room for events, performs it."""
        work_line = self._work_line
        streak = 0  # actions taken without waiting to be handed one
        while True:
            # Queue what came due meanwhile (the batch just answered, often), then make
            # sure the scheduler's alarm is not later than whatever stays scheduled.
            self._take_due()
            action = work_line.take()
            if action is None:
                streak = 0
                action = await work_line.handed(self._loop)
            elif (streak := streak + 1) >= _MAX_STREAK:
                # A reader that answers without suspending (a cache, a fake, a client
                # that fails at once) would otherwise keep this loop from ever yielding.
                streak = 0
                await asyncio.sleep(0)
            # Room for events first: a slow consumer holds requests back.
            if self._counts["events"] - self._received >= self._buffer_size:  # `_buffered`
                await self._wait_for_space()
            if action is SWEEP or not self._plain_poll():
                await self._perform(action)
                continue
            # The common case, a poll with no lease to check and an open gate, inline:
            # one coroutine less per poll than through `_perform`.
            self._counts["polls"] += 1
            try:
                snapshot = await self._batches.retrieve(action, retry=NO_RETRY)
            except AsyncBatchError as exc:
                self._emit(await self._failed(action, exc))
            else:
                events = self._tracker.observed(action, snapshot, self._loop.time())
                if events:  # most polls bring none
                    self._emit(events)

    def _plain_poll(self) -> bool:
        """No lease to check and our own gate open: a poll needs nothing but the request."""
        return self._leases is None and self._local_gate is not None and self._local_gate.open_now()

    async def _perform(self, action: Action) -> None:
        if action is not SWEEP and not self._holds(action):
            self._tracker.skip(action, self._loop.time() + self._lease_check_interval())
            return
        await self._gate.acquire()
        events = await (self._sweep() if action is SWEEP else self._poll(action))
        if self._leases is not None:
            events = [e for e in events if e.batch_id in self._held]
        self._emit(events)

    async def _poll(self, batch_id: str) -> list[Event]:
        self._counts["polls"] += 1
        try:
            snapshot = await self._batches.retrieve(batch_id, retry=NO_RETRY)
        except AsyncBatchError as exc:
            return await self._failed(batch_id, exc)
        return self._tracker.observed(batch_id, snapshot, self._loop.time())

    async def _sweep(self) -> list[Event]:
        self._counts["sweeps"] += 1
        try:
            snapshots = await self._list_active(_MAX_SWEEP_PAGES)
        except AsyncBatchError as exc:
            return await self._failed(SWEEP, exc)
        page_count = max(1, math.ceil(len(snapshots) / _PAGE_SIZE))
        return self._tracker.swept(snapshots, page_count, anyio.current_time())

    async def _list_active(self, max_pages: int) -> list[Batch]:
        """The account's active batches, at most ``max_pages`` pages of them.

        An account has at most five active batches, so the cap only bites on a
        server whose pages never end; the batches it leaves out are polled on
        their own. Each page after the first passes the gate like any request.
        """
        pages = self._batches.list(status=ACTIVE_STATUSES, page_limit=_PAGE_SIZE, retry=NO_RETRY)
        snapshots: list[Batch] = []
        async with aclosing(pages) as batches:
            while len(snapshots) < max_pages * _PAGE_SIZE:
                if snapshots and len(snapshots) % _PAGE_SIZE == 0:
                    await self._gate.acquire()
                try:
                    snapshots.append(await anext(batches))
                except StopAsyncIteration:
                    break
        return snapshots

    async def _failed(self, action: Action, error: AsyncBatchError) -> list[Event]:
        """Hand a failed request to the tracker, which decides; share a 429's pause."""
        now = anyio.current_time()
        events = self._tracker.failed(action, error, now)
        self._last_failure = error
        if isinstance(error, RateLimitError):
            self._counts["rate_limited"] += 1
            if self._telemetry is not None:
                self._telemetry.rate_limit_pause(self._tracker.paused_until - now)
            await self._gate.rate_limited(self._tracker.paused_until - now)
        elif not events:
            self._counts["retries"] += 1
            if self._telemetry is not None:
                self._telemetry.retry(_ENDPOINTS[action is SWEEP], error, None)
        return events

    # -- leases (replicas) ----------------------------------------------------------

    def _holds(self, batch_id: str) -> bool:
        return self._leases is None or batch_id in self._held

    def _lease_check_interval(self) -> float:
        return 1.0 if self._leases is None else self._leases.lease_seconds / 3.0

    async def _keep_leases(self) -> None:
        """Renew leases a few times per lease period; take over batches that came free."""
        while True:
            await self._claim_leases()
            await anyio.sleep(self._lease_check_interval())

    async def _claim_leases(self) -> None:
        if self._leases is None or self._store is None:
            return
        records = {r.batch_id: r for r in await self._store.load()}
        wanted = self._tracker.leases_wanted(
            records, self._held, anyio.current_time(), resume=self._resume
        )
        held = await self._leases.claim(wanted)
        self._tracker.leases_taken(held - self._held, records, anyio.current_time())
        self._held = held
        self._wake_if_sooner()

    async def _release_leases(self) -> None:
        if self._leases is None or not self._held:
            return
        held, self._held = self._held, set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5.0):
            await self._leases.release(held)

    # -- delivery -----------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        """Append events in order; never awaits, so nothing can overtake them."""
        if self._send is None or not events:
            return
        for event in events:
            self._send.send_nowait(event)
        self._counts["events"] += len(events)
        if self._gauges is not None:
            self._gauges.events(events, self._tracker.tracked_count, self._tracker.open_count)

    def _buffered(self) -> int:
        # Counted, not asked of the stream: this runs on every poll.
        return self._counts["events"] - self._received

    async def _wait_for_space(self) -> None:
        while self._buffered() >= self._buffer_size:
            if self._space.is_set():
                self._space = anyio.Event()
            await self._space.wait()

    def _deadline_message(self) -> str:
        text = f"no final state within the watch's time limit of {self._timeout:g} s"
        if self._last_failure is not None:
            text += f"; the last failed request: {type(self._last_failure).__name__}: "
            text += str(self._last_failure)
        return text


def _unwrapped(error: Exception) -> Exception:
    """The first real exception inside task-group wrapping: callers get typed errors."""
    while isinstance(error, ExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _valid_ids(server_ids: Iterable[str]) -> list[str]:
    """The IDs a server listed that we can watch; a malformed one is logged and skipped.

    It came from the server, so it is that batch's problem, not the caller's
    mistake: it must not stop the watch of every other batch.
    """
    valid = []
    for batch_id in server_ids:
        try:
            valid.append(check_batch_id(batch_id))
        except InvalidBatchIdError as exc:
            logger.warning("skipping a listed batch: %s", exc)
    return valid
