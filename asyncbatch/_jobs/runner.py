"""`Job`: any number of requests through the account's active-batch slots, to one final
outcome each, surviving crashes.

Theory of operation. Entering a job reads its requests to the end into the `Ledger`
(checking each one, refusing the whole input with line numbers on any problem, before a
single request is sent); a ledger that already holds the job is resumed instead. Then one
task drives it beside the caller's iteration:

* **Admit.** A batch is created only into a free slot: ``max_active`` minus the active
  batches that are not the job's (listed when the job starts, after each of its batches
  ends, and after a 429) minus its own. A 429 on create means "no slot yet": the job
  waits for one of its batches to end. Only when it has none running does it wait a
  while (backing off) and list again.
* **Plan.** `next_batch_size` sizes each batch so that every slot stays busy to the end.
* **Record.** An intent (the requests it takes) is committed before the create and the
  batch ID after it. On start, an intent without a batch ID is a create whose outcome is
  unknown: the account's newest batches are searched for the job's custom-ID prefix
  (``TAG-SEQ-``, where ``TAG`` is the job's and ``SEQ`` the intent's), and the orphan is
  adopted; if there is none, the requests wait again. A create that fails ambiguously
  (timeout, 5xx other than 503, a dropped connection) is settled the same way at once.
* **Watch.** Every batch is followed by one `Watcher` (``client.watch``); each progress
  event updates what the batch still has to do, which the planner uses.
* **Collect.** When a batch ends its results are streamed into the ledger, each item
  settled by `settle`: ``ready`` is final; ``failed`` items, and items an expired batch
  left unfinished, wait for a new batch until ``max_attempts``.
* **Deliver.** The iterator yields each final outcome whose delivery was not yet
  acknowledged; asking for the next one acknowledges it (``auto_ack``), or call `ack`.

A create refused outright (400, 404 for a missing asset, 409) makes no batch; the job
halves its next batch until the refused request is alone, and that one ends ``failed``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypedDict, TypeVar, Unpack

import anyio
import msgspec
from anyio.abc import TaskGroup

from .._errors import (
    APIStatusError,
    AsyncBatchError,
    AuthenticationError,
    ConflictError,
    DecodeError,
    EndpointNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from .._events import Event, EventKind
from .._models import (
    ACTIVE_STATUSES,
    Batch,
    BatchDefaults,
    CreatedBatch,
    ItemError,
)
from .._redact import redact_url
from .._results import ResultStream
from .._retry import NO_RETRY, PollPolicy, RetryPolicy
from .._telemetry import JobProgress, report_job_progress, telemetry_hooks
from .._watcher import Watcher, WatchOptions
from .ledger import Intent, ItemResult, Ledger
from .outcome import JobOutcome, JobStatistics, OutcomeStatus
from .plan import MAX_BATCH_SIZE, next_batch_size
from .source import Requests, rows
from .state import open_ledger

logger = logging.getLogger("asyncbatch")

DEFAULT_POLL = PollPolicy(min_interval=10.0, max_interval=60.0)
"""A job's watcher cadence: batches of a job run for minutes to hours."""

MAX_PROBLEMS = 20
"""Problems of an input reported at most (reading stops there)."""

_ORPHAN_SCAN = 200
"""Newest batches of the account searched for an orphan."""

_IDLE_WAIT = (15.0, 300.0)
"""First and longest wait for a slot when none of the job's batches runs (foreign ones do)."""

_RESULT_CHUNK = 200

_NEVER_BETTER = (AuthenticationError, PermissionDeniedError, EndpointNotFoundError)
"""Failures a retry cannot mend: a wrong key, no permission, a wrong base URL."""

_T = TypeVar("_T")

_RATE_WAIT_LIMIT = 60.0
"""A 429 on create naming a wait up to this long is the request rate, not a full account."""


class JobBatches(Protocol):
    """The batch calls a job makes; `Client.batches` is one."""

    async def create(
        self,
        requests: Iterable[Mapping[str, Any]],
        *,
        model_name: str = ...,
        analysis_mode: str = ...,
        defaults: BatchDefaults | Mapping[str, Any] | None = ...,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> CreatedBatch:
        """Create a batch."""
        ...

    def list(
        self, *, status: Iterable[str] | None = None, page_limit: int = ...
    ) -> AsyncGenerator[Batch, None]:
        """The account's batches, newest first."""
        ...

    def results(self, batch_id: str) -> ResultStream:
        """A batch's results."""
        ...

    async def retrieve(self, batch_id: str, *, timeout: float | None = ...) -> Batch:
        """A batch's current status and counters."""
        ...

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch."""
        ...


class JobClient(Protocol):
    """What a `Job` needs from a client: its batch calls and a watcher (`Client` is one)."""

    @property
    def batches(self) -> JobBatches:
        """The batch endpoints."""
        ...

    def watch(self, batch_ids: Iterable[str] = (), **options: Unpack[WatchOptions]) -> Watcher:
        """A watcher over ``batch_ids``."""
        ...


EventHook = Callable[[Event], object]


class JobOptions(TypedDict, total=False):
    """The keyword options of `Job`, as `Jobs.run` takes them (``**options:
    Unpack[JobOptions]``), so that a type checker and an editor know each one; `Jobs.run`
    documents what each does."""

    defaults: BatchDefaults | Mapping[str, Any] | None
    model_name: str
    analysis_mode: str
    state: str
    max_attempts: int
    max_active: int
    max_batch_size: int
    poll: PollPolicy | None
    auto_ack: bool
    on_event: EventHook | None


def check_limits(*, max_attempts: int, max_active: int) -> None:
    """`ValueError` unless a job may try each request and use a slot at least once."""
    if max_attempts < 1 or max_active < 1:
        raise ValueError("max_attempts and max_active must be at least 1")


class Job:
    """A job: use ``async with client.jobs.run(requests, state=...) as job: async for
    outcome in job: ...``. Each request's final `JobOutcome` comes exactly once.

    See the module documentation for how it runs, and `Jobs.run` for the arguments.
    """

    def __init__(
        self,
        client: JobClient,
        requests: Requests,
        *,
        defaults: BatchDefaults | Mapping[str, Any] | None = None,
        model_name: str = "pegasus1.5",
        analysis_mode: str = "general",
        state: str = "memory://",
        max_attempts: int = 3,
        max_active: int = 5,
        max_batch_size: int = MAX_BATCH_SIZE,
        poll: PollPolicy | None = None,
        auto_ack: bool = True,
        on_event: EventHook | None = None,
    ) -> None:
        check_limits(max_attempts=max_attempts, max_active=max_active)
        if not 1 <= max_batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"max_batch_size must be 1 to {MAX_BATCH_SIZE}")
        self._client = client
        self._requests = requests
        self._defaults = _builtins(defaults)
        self._model = model_name
        self._mode = analysis_mode
        self._state_url = state
        self._max_attempts = max_attempts
        self._max_active = max_active
        self._cap = max_batch_size
        self._poll = poll or DEFAULT_POLL
        self._auto_ack = auto_ack
        self._on_event = on_event
        self._ledger: Ledger | None = None
        self._tag = ""
        self._stage = "new"
        self._group: TaskGroup | None = None
        self._watcher: Watcher | None = None
        self._loads: dict[str, int] = {}
        self._foreign = 0
        self._limit = max_active
        self._probe: int | None = None
        self._canceling = False
        self._done = False
        self._failure: BaseException | None = None
        self._changed = anyio.Event()
        self._finals = anyio.Event()
        self._buffer: deque[JobOutcome] = deque()
        self._handed: set[int] = set()
        self._unacked: int | None = None
        self._started_at = 0.0
        self._final_at_start = 0

    def __repr__(self) -> str:
        return f"<asyncbatch.Job {self._stage} state={redact_url(self._state_url)!r}>"

    @property
    def tag(self) -> str:
        """The job's tag: every custom ID it sends starts with ``TAG-``."""
        return self._tag

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stage != "new":
            raise RuntimeError("a Job can be entered only once")
        await self._open()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._drive)
        return self

    @asynccontextmanager
    async def advance(self) -> AsyncIterator[list[str]]:
        """One wave of the job without a watcher, for a caller that waits elsewhere (the
        Airflow job operator defers between waves): ``async with job.advance() as active:``.

        Entering opens the ledger (reading the requests in, or resuming), settles unknown
        creates (orphan adoption), collects every active batch that has ended (its status
        retrieved once; collected exactly as a watched job collects it), then fills the free
        slots with new batches exactly as a running job does. Inside the block the job
        iterates the outcomes it owes and then stops (deliver them with
        `asyncbatch._jobs.output.deliver`); ``active`` is the IDs of the job's batches still
        running: empty exactly when every request is final. When foreign batches hold every
        slot and none of the job's runs, it waits here (backing off) until one comes free.
        A job is entered once: ``advance`` or ``async with``, never both.
        """
        if self._stage != "new":
            raise RuntimeError("a Job can be entered only once")
        await self._open()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._entered().hold)
                active = await self._wave()
                group.cancel_scope.cancel()
            self._done = True
            yield active
        except Exception as exc:
            raise _unwrapped(exc) from None
        finally:
            self._stage = "closed"
            await self._close_ledger()

    async def _open(self) -> None:
        self._stage = "running"
        self._ledger = await open_ledger(self._state_url)
        try:
            await self._load_input(self._ledger)
        except BaseException:
            self._stage = "closed"
            await self._close_ledger()
            raise
        self._canceling = self._ledger.meta("canceled") == "1"
        self._started_at = anyio.current_time()
        self._final_at_start = _finished(self._ledger.counts())

    async def _close_ledger(self) -> None:
        if self._ledger is not None:
            await self._ledger.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        self._stage = "closed"
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            await self._close_ledger()

    async def _load_input(self, ledger: Ledger) -> None:
        """Read the requests into the ledger, or check that it holds this job already."""
        options = {
            "model_name": self._model,
            "analysis_mode": self._mode,
            "defaults": msgspec.json.encode(self._defaults).decode(),
        }
        fingerprint = _fingerprint(self._requests)
        if ledger.meta("input") == "complete":
            self._tag = ledger.meta("tag") or ""
            _check_same_job(ledger, options, fingerprint)
            return
        self._tag = secrets.token_hex(4)
        meta = {"input": "complete", "tag": self._tag, **options}
        if fingerprint is not None:
            meta["fingerprint"] = fingerprint
        async with ledger.ingesting(meta, MAX_PROBLEMS) as intake:
            async for row in rows(self._requests):
                await intake.add(row)
                if intake.full:
                    break
        problems = intake.problems
        if problems:
            from .._errors import InvalidRequestError  # noqa: PLC0415 - only on failure

            more = " (and maybe more)" if len(problems) >= MAX_PROBLEMS else ""
            raise InvalidRequestError(
                f"{len(problems)} problem(s) in the requests{more}, nothing was sent: "
                + "; ".join(problems)
            )

    # -- the caller's side --------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JobOutcome:
        ledger = self._entered()
        if self._auto_ack and self._unacked is not None:
            line, self._unacked = self._unacked, None
            await self._acknowledge(ledger, line)
        while True:
            if not self._buffer:
                fresh = await ledger.undelivered(256 + len(self._handed))
                self._buffer.extend(o for o in fresh if o.line not in self._handed)
            if self._buffer:
                outcome = self._buffer.popleft()
                self._handed.add(outcome.line)
                if self._auto_ack:
                    self._unacked = outcome.line
                return outcome
            if self._failure is not None:
                raise self._failure
            if self._done:
                raise StopAsyncIteration
            if self._finals.is_set():
                self._finals = anyio.Event()
            await self._finals.wait()

    async def reconcile(self, delivered: Iterable[int]) -> None:
        """Make exactly the outcomes of these lines count as delivered, before iterating:
        every other final outcome comes again (``asyncbatch run`` passes the lines its output
        file holds, which is where its deliveries really are)."""
        await self._entered().redeliver_all_but(delivered)
        self._buffer.clear()

    async def ack(self, outcome: JobOutcome) -> None:
        """Acknowledge ``outcome``: a job resumed on the same state will not deliver it again."""
        await self._acknowledge(self._entered(), outcome.line)

    async def _acknowledge(self, ledger: Ledger, line: int) -> None:
        await ledger.acknowledge(line)
        self._handed.discard(line)

    async def cancel(self) -> None:
        """Cancel the job: no new batch; its running batches are canceled; requests not yet
        final end ``canceled`` (those a canceled batch had finished keep their outcome).

        Outcomes keep coming until the canceled batches have ended and been collected.
        """
        ledger = self._entered()
        self._canceling = True
        await ledger.set_meta({"canceled": "1"})
        await ledger.cancel_waiting()
        self._finals.set()
        await cancel_batches(self._client, ledger.active_batches())
        self._changed.set()

    def statistics(self) -> JobStatistics:
        """Requests by state, batches, attempts, rate and ETA right now."""
        ledger = self._entered()
        counts = ledger.counts()
        total, attempts, delivered = ledger.totals()
        finished = _finished(counts)
        elapsed = anyio.current_time() - self._started_at
        made = finished - self._final_at_start
        rate = made / elapsed if made > 0 and elapsed > 0 else None
        eta = (total - finished) / rate if rate else None
        active = ledger.batch_count("active")
        return JobStatistics(
            total=total,
            items={
                "waiting": counts.get("waiting", 0),
                "running": counts.get("running", 0),
                **{str(s): counts.get(s, 0) for s in OutcomeStatus},
            },
            batches_active=active,
            batches_done=ledger.batch_count("ended"),
            attempts=attempts,
            delivered=delivered,
            rate=rate,
            eta=eta,
            slots_in_use=active,
            slots_free=max(0, self._limit - self._foreign - active),
        )

    def _entered(self) -> Ledger:
        if self._ledger is None or self._stage != "running":
            raise RuntimeError("enter the job with `async with` first")
        return self._ledger

    # -- the driver ---------------------------------------------------------------------

    async def _drive(self) -> None:
        try:
            watcher = self._client.watch((), stop_when_done=False, poll=self._poll)
            async with watcher, anyio.create_task_group() as group:
                self._watcher = watcher
                group.start_soon(self._entered().hold)
                await self._count_foreign(strict=True)
                group.start_soon(self._follow, watcher)
                await self._recover()
                for batch_id in self._entered().active_batches():
                    self._loads.setdefault(batch_id, MAX_BATCH_SIZE)
                    watcher.add(batch_id)
                await self._submit()
                group.cancel_scope.cancel()
        except Exception as exc:  # handed to the caller's iteration
            self._failure = _unwrapped(exc)
        finally:
            self._done = True
            self._finals.set()

    async def _submit(self) -> None:
        """Create batches into free slots until every request is final."""
        ledger = self._entered()
        idle_wait = _IDLE_WAIT[0]
        while True:
            if await self._admit(ledger):
                idle_wait = _IDLE_WAIT[0]
                continue
            if not ledger.counts().get("waiting", 0) and not ledger.active_batches():
                return
            if not ledger.active_batches():  # only foreign batches hold the slots: look again
                with anyio.move_on_after(idle_wait):
                    await self._wait_for_change()
                idle_wait = await self._look_again(idle_wait)
            else:
                await self._wait_for_change()

    async def _admit(self, ledger: Ledger) -> bool:
        """Create one batch if requests wait and a slot is free; False when none can be."""
        if self._canceling and await ledger.cancel_waiting():
            self._finals.set()
        waiting = ledger.counts().get("waiting", 0)
        active = ledger.active_batches()
        free = self._limit - self._foreign - len(active)
        if not waiting or free <= 0:
            return False
        running = [self._loads.get(b, 0) for b in active]
        size = next_batch_size(waiting, free_slots=free, running=running, cap=self._cap)
        if self._probe is not None:
            size = min(size, self._probe)
        await self._create(ledger, await ledger.new_intent(size))
        return True

    async def _look_again(self, idle_wait: float) -> float:
        """After an idle wait: the account's limit applies again, foreign batches are counted
        again; the next wait is twice as long."""
        self._limit = self._max_active
        await self._count_foreign()
        return min(idle_wait * 2, _IDLE_WAIT[1])

    async def _wave(self) -> list[str]:
        """Collect what ended, fill the free slots; the job's batches still active."""
        ledger = self._entered()
        await self._count_foreign(strict=True)
        await self._recover()
        for batch_id in list(ledger.active_batches()):
            await self._poll_once(batch_id)
        idle_wait = _IDLE_WAIT[0]
        while True:
            while await self._admit(ledger):
                pass
            active = list(ledger.active_batches())
            if active or not ledger.counts().get("waiting", 0):
                return active
            await anyio.sleep(idle_wait)  # only foreign batches hold the slots
            idle_wait = await self._look_again(idle_wait)

    async def _poll_once(self, batch_id: str) -> None:
        """Retrieve a batch once: collect it if it has ended (or is gone), else note its load."""
        try:
            batch = await self._client.batches.retrieve(batch_id)
        except NotFoundError:
            await self._collect(batch_id, "gone")
            return
        if batch.is_terminal:
            await self._collect(batch_id, batch.status)
        else:
            self._loads[batch_id] = batch.queued_items + batch.processing_items

    async def _wait_for_change(self) -> None:
        if self._changed.is_set():
            self._changed = anyio.Event()
        await self._changed.wait()

    async def _count_foreign(self, *, strict: bool = False) -> None:
        """Count the account's active batches that are not this job's.

        If the list fails the count is kept (the next 429 or batch end looks again), unless
        ``strict``: the job's first request, which stops a job that cannot reach the API (a
        wrong URL or key) before it does anything.
        """
        ours = self._entered().known_batch_ids()
        try:
            pages = self._client.batches.list(status=ACTIVE_STATUSES, page_limit=50)
            async with aclosing(pages) as batches:
                self._foreign = sum([b.batch_id not in ours async for b in batches])
        except _NEVER_BETTER:
            raise
        except AsyncBatchError as exc:
            if strict:
                raise
            logger.warning("job %s: listing active batches failed: %s", self._tag, exc)

    async def _create(self, ledger: Ledger, intent: Intent) -> None:
        requests = [self._request(intent.seq, line, raw) for line, raw in intent.pairs()]
        try:
            created = await self._client.batches.create(
                requests,
                model_name=self._model,
                analysis_mode=self._mode,
                defaults=self._defaults,
                retry=NO_RETRY,
            )
        except RateLimitError as exc:
            await ledger.void_intent(intent.seq)  # a 429 proves nothing was made
            await self._no_slot(ledger, exc)
            return
        except _NEVER_BETTER:
            await ledger.void_intent(intent.seq)
            raise
        except APIStatusError as exc:
            if exc.status == 503 or 400 <= exc.status < 500:
                await ledger.void_intent(intent.seq)  # refused before anything was made
                if 400 <= exc.status < 500:
                    await self._refused(ledger, intent, exc)
                else:
                    await anyio.sleep(_IDLE_WAIT[0])
                return
            await self._settle_unknown(ledger, intent.seq)
            return
        except AsyncBatchError:
            await self._settle_unknown(ledger, intent.seq)
            return
        self._probe = None
        await self._started(ledger, intent.seq, created.batch_id, len(intent.lines))

    async def _no_slot(self, ledger: Ledger, error: RateLimitError) -> None:
        """A 429 on create. With a short ``Retry-After`` it is the request rate: wait that
        long. Without, the account has no free slot (more batches are active than the job
        counts): the job takes the slots it has as the limit until one of its batches ends."""
        if error.retry_after is not None and error.retry_after <= _RATE_WAIT_LIMIT:
            await anyio.sleep(error.retry_after)
            return
        await self._count_foreign()
        self._limit = self._foreign + len(ledger.active_batches())

    async def _started(self, ledger: Ledger, seq: int, batch_id: str, size: int) -> None:
        await ledger.created(seq, batch_id)
        self._loads[batch_id] = size
        if self._watcher is not None:
            self._watcher.add(batch_id)

    async def _refused(self, ledger: Ledger, intent: Intent, error: APIStatusError) -> None:
        """A create refused outright: narrow down to the request the API refuses."""
        if len(intent.lines) > 1:
            self._probe = max(1, len(intent.lines) // 2)
            logger.warning(
                "job %s: a batch of %d was refused (%s); trying halves",
                self._tag,
                len(intent.lines),
                error,
            )
            return
        message = error.message or str(error)
        await ledger.refuse(intent.lines, ItemError(message=message, code=error.code))
        self._finals.set()

    def _request(self, seq: int, line: int, raw: bytes) -> dict[str, Any]:
        request: dict[str, Any] = msgspec.json.decode(raw)
        request["custom_id"] = f"{self._tag}-{seq}-{line}"
        return request

    # -- crash recovery -----------------------------------------------------------------

    async def _recover(self) -> None:
        """Settle every intent whose create's outcome is unknown."""
        ledger = self._entered()
        for seq in ledger.open_intents():
            await self._settle_unknown(ledger, seq)

    async def _settle_unknown(self, ledger: Ledger, seq: int) -> None:
        """Adopt the batch intent ``seq`` made, if the account has it; else void the intent.

        The search is retried until it completes: voiding an intent whose batch exists
        would send its requests twice.
        """
        intent = await ledger.intent(seq)
        batch_id = await self._until_done(
            lambda: self._find_orphan(ledger, seq, len(intent.lines)), f"looking for batch {seq}"
        )
        if batch_id is None:
            await ledger.void_intent(seq)
            return
        logger.warning("job %s: adopted batch %s, created before a crash", self._tag, batch_id)
        await self._started(ledger, seq, batch_id, len(intent.lines))

    async def _find_orphan(self, ledger: Ledger, seq: int, size: int) -> str | None:
        prefix = f"{self._tag}-{seq}-"
        known = ledger.known_batch_ids()
        scanned = 0
        async with aclosing(self._client.batches.list(page_limit=50)) as batches:
            async for batch in batches:
                scanned += 1
                if batch.batch_id in known or scanned > _ORPHAN_SCAN:
                    return None  # every batch from here on is older than the intent
                if batch.total_items == size and await self._first_custom_id(batch) == prefix:
                    return batch.batch_id
        return None

    async def _first_custom_id(self, batch: Batch) -> str | None:
        """The job prefix (``TAG-SEQ-``) of the batch's first result, or None."""
        async with self._client.batches.results(batch.batch_id) as items:
            async for item in items:
                parsed = self._parse(item.custom_id)
                return None if parsed is None else f"{self._tag}-{parsed[0]}-"
        return None

    def _parse(self, custom_id: str | None) -> tuple[int, int] | None:
        """``(seq, line)`` from a custom ID this job sent, or None."""
        if custom_id is None:
            return None
        tag, _, rest = custom_id.partition("-")
        seq, _, line = rest.partition("-")
        if tag != self._tag or not seq.isdigit() or not line.isdigit():
            return None
        return int(seq), int(line)

    # -- following and collecting ------------------------------------------------------

    async def _follow(self, watcher: Watcher) -> None:
        async for event in watcher:
            if self._on_event is not None:
                self._on_event(event)
            if event.kind is EventKind.ERROR:
                raise event.error or AsyncBatchError(f"watching {event.batch_id} failed")
            if event.kind is EventKind.GONE:
                await self._collect(event.batch_id, "gone")
            elif event.batch is not None and event.kind is EventKind.DONE:
                await self._collect(event.batch_id, event.batch.status)
            elif event.batch is not None:
                self._loads[event.batch_id] = event.batch.queued_items + (
                    event.batch.processing_items
                )

    async def _collect(self, batch_id: str, batch_status: str) -> None:
        """Apply an ended batch's results; retried on transient failures (idempotent)."""
        ledger = self._entered()
        seq = ledger.active_batches().get(batch_id)
        if seq is None:
            return
        if batch_status != "gone":
            await self._until_done(
                lambda: self._read_results(ledger, seq, batch_id, batch_status),
                f"results of {batch_id}",
            )
        await ledger.end_batch(
            seq,
            batch_id,
            batch_status=batch_status,
            max_attempts=self._max_attempts,
            canceling=self._canceling,
        )
        self._loads.pop(batch_id, None)
        self._limit = self._max_active  # a slot came free: the account's limit applies again
        if self._watcher is not None:
            self._watcher.discard(batch_id)
        if not self._canceling:
            await self._count_foreign()
        self._report_progress()
        self._finals.set()
        self._changed.set()

    def _report_progress(self) -> None:
        """Hand the job's totals to telemetry hooks, once per ended batch."""
        if not telemetry_hooks():
            return  # nobody listens: spare the ledger's queries
        stats = self.statistics()
        progress = JobProgress(
            items=stats.items,
            batches_active=stats.batches_active,
            batches_done=stats.batches_done,
            attempts=stats.attempts,
        )
        report_job_progress(self._tag, progress)

    async def _until_done(self, call: Callable[[], Awaitable[_T]], what: str) -> _T:
        """``call()`` until it completes, retried after each failure that a retry may mend
        (waiting 1 s, doubling up to 60 s); one that will not mend is raised."""
        delay = 1.0
        while True:
            try:
                return await call()
            except _NEVER_BETTER:
                raise
            except AsyncBatchError as exc:
                logger.warning("job %s: %s failed: %s; retrying", self._tag, what, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _read_results(self, ledger: Ledger, seq: int, batch_id: str, status: str) -> None:
        """Apply a batch's results; a line that does not decode ends the reading (what was
        not read goes round again), since reading it again would fail the same way."""
        try:
            await self._apply_results(ledger, seq, batch_id, status)
        except DecodeError as exc:
            logger.warning("job %s: results of %s: %s", self._tag, batch_id, exc)

    async def _apply_results(self, ledger: Ledger, seq: int, batch_id: str, status: str) -> None:
        async with self._client.batches.results(batch_id) as items:
            chunk: list[ItemResult] = []
            async for item in items:
                parsed = self._parse(item.custom_id)
                if parsed is None or parsed[0] != seq:
                    continue  # not this attempt's: nothing to settle
                chunk.append(
                    ItemResult(parsed[1], item.status, item.task_id, item.data, item.error)
                )
                if len(chunk) >= _RESULT_CHUNK:
                    await self._apply(ledger, seq, batch_id, status, chunk)
                    chunk = []
            await self._apply(ledger, seq, batch_id, status, chunk)

    async def _apply(
        self, ledger: Ledger, seq: int, batch_id: str, status: str, chunk: list[ItemResult]
    ) -> None:
        await ledger.apply_results(
            seq,
            batch_id,
            chunk,
            batch_status=status,
            max_attempts=self._max_attempts,
            canceling=self._canceling,
        )
        self._finals.set()


async def cancel_batches(client: JobClient, batch_ids: Iterable[str]) -> int:
    """Ask to cancel each batch; one that has ended already is skipped. Returns how many."""
    count = 0
    for batch_id in batch_ids:
        try:
            await client.batches.cancel(batch_id)
        except ConflictError:
            continue
        count += 1
    return count


def _check_same_job(ledger: Ledger, options: dict[str, str], fingerprint: str | None) -> None:
    for key, value in options.items():
        if ledger.meta(key) != value:
            raise ValueError(
                f"this state holds a job with another {key} ({ledger.meta(key)}); "
                "use a new --state for a new job"
            )
    kept = ledger.meta("fingerprint")
    if fingerprint is not None and kept is not None and kept != fingerprint:
        raise ValueError(
            "this state holds a job made from another input file; use a new --state for it"
        )


def _fingerprint(requests: Requests) -> str | None:
    """A file's SHA-256 (a resumed job checks that its input did not change); None otherwise."""
    if not isinstance(requests, str | Path) and not hasattr(requests, "__fspath__"):
        return None
    digest = hashlib.sha256()
    try:
        with Path(str(requests)).open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError:
        return None  # reading reports it
    return digest.hexdigest()


def _finished(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in OutcomeStatus)


def _builtins(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    raw = msgspec.to_builtins(value)
    if not isinstance(raw, dict):
        raise TypeError("defaults must be a BatchDefaults or a mapping")
    return raw


def _unwrapped(error: Exception) -> Exception:
    while isinstance(error, ExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
