"""`Ledger`: what a job's durable record must do, whatever keeps it (SQLite or Redis).

A ledger holds a job's requests (one item per request, keyed by its 1-based ``line``, with
the caller's unique ``custom_id``, the request as sent without a custom ID, its state,
attempts, the batch of its current or last attempt, its result, and whether its outcome was
delivered), its batches (an ``intent`` written before each create, then ``active`` with the
batch ID, then ``ended`` once its results are in), every attempt of every request, and a
few ``meta`` values (the job's tag, options, whether its input was read to the end).

An item's state is ``waiting`` (in no batch), ``running`` (in intent or batch ``seq``), or
final: ``ready``, ``failed`` or ``canceled``.

The contract every ledger keeps, on which crash recovery rests:

* each write is atomic: a crash at any moment leaves the state before or after it;
* an intent is on record before its create is sent, so after a crash an intent without a
  batch ID is a create whose outcome is unknown (the job looks for its orphan);
* results apply only to items still ``running`` in that batch, so collecting a batch
  twice changes nothing;
* reads of the small state (meta, counts, totals, batches) are synchronous and answer
  from what the ledger last wrote (`Job.statistics` is synchronous); everything that
  writes, and every read that grows with the job, is awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from .._models import ItemError, TaskResult, decode_body
from .outcome import Attempt, JobOutcome, OutcomeStatus

WAITING: Final = "waiting"
RUNNING: Final = "running"
FINAL_STATES: Final = (OutcomeStatus.READY, OutcomeStatus.FAILED, OutcomeStatus.CANCELED)

INTAKE_CHUNK: Final = 500
"""Requests stored per write while a job's input is read."""

Row = tuple[int, str | None, bytes]
"""A request as stored: its line, the caller's custom ID, and the request JSON without it."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A create about to be sent (or sent, with its outcome unknown): its items."""

    seq: int
    lines: list[int]
    requests: list[bytes]

    def pairs(self) -> Iterator[tuple[int, bytes]]:
        """``(line, request)`` of each item."""
        return zip(self.lines, self.requests, strict=True)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One results line of a batch, as the ledger applies it."""

    line: int
    status: str
    task_id: str | None
    data: TaskResult | None
    error: ItemError | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What ending a batch's attempt means for an item: its next state, and why."""

    state: str
    error: ItemError | None


def settle(
    status: str,
    *,
    batch_status: str,
    attempts: int,
    max_attempts: int,
    canceling: bool,
    error: ItemError | None,
) -> Settlement:
    """The next state of an item whose attempt (number ``attempts``) ended as ``status``.

    ``ready`` is final. A job being canceled ends everything else (``failed`` if that was
    its last attempt anyway, else ``canceled``). An item canceled in a batch canceled by
    someone else stays canceled. Everything else (``failed``, canceled by expiry, or
    left unfinished or missing in an ended batch) goes round again until ``max_attempts``.
    """
    if status == OutcomeStatus.READY:
        return Settlement(OutcomeStatus.READY, None)
    exhausted = attempts >= max_attempts
    if status == OutcomeStatus.CANCELED and not canceling and batch_status == "canceled":
        return Settlement(OutcomeStatus.CANCELED, error or _CANCELED)
    if status == OutcomeStatus.CANCELED and batch_status == "expired":
        error = error or _EXPIRED
    elif status not in (OutcomeStatus.FAILED, OutcomeStatus.CANCELED):
        error = error or ItemError(message=f"left {status} when batch ended {batch_status}")
    if canceling:
        failed = exhausted and status == OutcomeStatus.FAILED
        return Settlement(
            OutcomeStatus.FAILED if failed else OutcomeStatus.CANCELED, error or JOB_CANCELED
        )
    return Settlement(OutcomeStatus.FAILED if exhausted else WAITING, error)


_CANCELED = ItemError(message="the batch was canceled", code="batch_canceled")
_EXPIRED = ItemError(message="unfinished when the batch expired", code="batch_expired")
JOB_CANCELED = ItemError(message="the job was canceled", code="job_canceled")


def missing(lines: Iterable[int]) -> list[ItemResult]:
    """Results for items an ended batch's results did not name (they go round again)."""
    return [ItemResult(n, status="missing", task_id=None, data=None, error=None) for n in lines]


_error_decoder = msgspec.json.Decoder(ItemError)
_data_decoder = msgspec.json.Decoder(TaskResult)
_encoder = msgspec.json.Encoder()


def encoded(value: ItemError | TaskResult | None) -> bytes | None:
    """An error or a result as a ledger stores it (JSON), or None."""
    return None if value is None else _encoder.encode(value)


def stored_error(raw: bytes | None) -> ItemError | None:
    """An error a ledger stored; `DecodeError` if the bytes are not one."""
    return None if raw is None else decode_body(_error_decoder, raw, "stored item error")


def stored_data(raw: bytes | None) -> TaskResult | None:
    """A result a ledger stored; `DecodeError` if the bytes are not one."""
    return None if raw is None else decode_body(_data_decoder, raw, "stored item result")


def stored_attempt(
    number: int, batch_id: str, status: str, task_id: str | None, error: bytes | None
) -> Attempt:
    """One attempt from a ledger's stored fields."""
    return Attempt(
        number=number, batch_id=batch_id, status=status, task_id=task_id, error=stored_error(error)
    )


StoreRows = Callable[[list[Row]], Awaitable[list[str]]]
"""Stores rows in a ledger; returns a problem for each whose custom ID is taken."""


class Intake:
    """Requests going into a ledger, stored ``INTAKE_CHUNK`` at a time; collects the
    problems (at most ``limit``). The ledger's `Ledger.ingesting` makes one and closes it."""

    def __init__(self, store: StoreRows, limit: int) -> None:
        self._store = store
        self._limit = limit
        self._pending: list[Row] = []
        self.problems: list[str] = []
        self.count = 0

    @property
    def full(self) -> bool:
        """Enough problems were found: reading further would only add to the list."""
        return len(self.problems) >= self._limit

    async def add(self, row: Row | str) -> None:
        """Store a request, or note a problem (a string) found in the input."""
        if isinstance(row, str):
            self.problems.append(row)
            return
        self._pending.append(row)
        if len(self._pending) >= INTAKE_CHUNK:
            await self._flush()

    async def close(self) -> None:
        """Store what is pending; an input without a single request is a problem too."""
        await self._flush()
        if not self.count and not self.problems:
            self.problems.append("the input holds no requests")

    async def _flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        refused = await self._store(rows)
        self.problems.extend(refused)
        self.count += len(rows) - len(refused)


class Ledger(Protocol):
    """A job's durable record (see the module documentation for the contract)."""

    async def aclose(self) -> None:
        """Close the ledger (and its connection), letting another process open it. Idempotent."""
        ...

    async def hold(self) -> None:
        """Keep this process's claim on the job alive while it runs; never returns (cancel
        it). Opening a ledger claims its job: a second process is refused meanwhile."""
        ...

    # -- small state, answered from what was last written --------------------------------

    def meta(self, key: str) -> str | None:
        """A meta value, or None."""
        ...

    def counts(self) -> dict[str, int]:
        """Requests by state (states with none may be missing)."""
        ...

    def totals(self) -> tuple[int, int, int]:
        """``(requests, attempts, delivered)`` over the whole job."""
        ...

    def batch_count(self, state: str) -> int:
        """Batches in ``state`` (``intent``, ``active`` or ``ended``)."""
        ...

    def active_batches(self) -> dict[str, int]:
        """Batch ID to ``seq`` of every batch created and not yet collected."""
        ...

    def known_batch_ids(self) -> set[str]:
        """Every batch ID this job created."""
        ...

    def open_intents(self) -> list[int]:
        """Intents whose create's outcome is unknown (a crash came between the two records)."""
        ...

    # -- writes, and reads that grow with the job --------------------------------------

    async def set_meta(self, values: dict[str, str]) -> None:
        """Write ``values`` into meta, all or none."""
        ...

    def ingesting(self, meta: dict[str, str], limit: int) -> AbstractAsyncContextManager[Intake]:
        """Store requests (`Intake.add`); on leaving, with no problem found, write ``meta``
        (which marks the input read). With any problem, or an exception inside the block,
        nothing is kept (nor is anything left of an earlier, interrupted reading)."""
        ...

    async def new_intent(self, size: int) -> Intent:
        """Take up to ``size`` waiting requests (first lines first) into a new intent."""
        ...

    async def intent(self, seq: int) -> Intent:
        """The items of intent (or batch) ``seq`` still running in it, first lines first."""
        ...

    async def created(self, seq: int, batch_id: str) -> None:
        """Record that intent ``seq`` became batch ``batch_id``."""
        ...

    async def void_intent(self, seq: int) -> None:
        """Intent ``seq`` made no batch: its requests wait again, no attempt counted."""
        ...

    async def apply_results(
        self,
        seq: int,
        batch_id: str,
        results: Sequence[ItemResult],
        *,
        batch_status: str,
        max_attempts: int,
        canceling: bool,
    ) -> int:
        """Settle (`settle`) the items of batch ``seq`` that ``results`` name, recording an
        attempt for each; returns how many changed. Only items still running in that batch
        change, so applying twice is harmless."""
        ...

    async def end_batch(
        self, seq: int, batch_id: str, *, batch_status: str, max_attempts: int, canceling: bool
    ) -> int:
        """Mark batch ``seq`` ended; items its results did not settle are settled as
        ``missing`` (they go round again). Returns how many items that changed."""
        ...

    async def refuse(self, lines: Sequence[int], error: ItemError) -> None:
        """The API refused these requests outright: final ``failed`` unless already
        ``ready``, one attempt counted."""
        ...

    async def cancel_waiting(self) -> int:
        """End every waiting request as ``canceled`` (`JOB_CANCELED`); returns how many."""
        ...

    async def undelivered(self, limit: int) -> list[JobOutcome]:
        """Up to ``limit`` final outcomes not yet acknowledged, first lines first, each with
        its history."""
        ...

    async def acknowledge(self, line: int) -> None:
        """Mark the outcome of ``line`` delivered (on record when this returns)."""
        ...

    async def redeliver_all_but(self, lines: Iterable[int]) -> None:
        """Make every final outcome undelivered except those of ``lines``."""
        ...
