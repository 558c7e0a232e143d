"""What ``asyncbatch watch`` knows of each batch, fed by watch events (pure, no IO).

A `Board` keeps one `Row` per batch: the newest snapshot, the final event if
one came, and the first observation, from which it derives a rate (items
processed, ready or failed, per second since the watch began; canceled items
are not processed, they stop at once) and an ETA. It also decides the
watch's `Verdict` and writes the end-of-watch summary. Times are plain
numbers on any monotonic clock, passed in, so every figure is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .._errors import AuthenticationError, PermissionDeniedError
from .._events import Event, EventKind
from .._models import Batch
from .._stores.memory import StoredBatch
from .render import (
    NO_SUCH_BATCH,
    counts_text,
    duration_text,
    failure_text,
    outcome_text,
)


class Verdict(Enum):
    """How a watch ended as a whole; `watch.report_exit` gives it its exit status."""

    SUCCEEDED = "succeeded"
    """Every batch this watch answers for (if any) completed with all its items ready."""
    FAILED = "failed"
    """Some batch failed, was canceled, vanished, had failed items or never ended."""
    KEY_REFUSED = "key refused"
    """The API refused the key: no batch outcome means anything until that is fixed."""


@dataclass(slots=True)
class Row:
    """One watched batch."""

    batch_id: str
    name: str | None = None
    """What the table calls the batch instead of its ID (the demo names its batches)."""
    batch: Batch | None = None
    final: EventKind | None = None
    error: BaseException | None = None
    first_at: float | None = None
    first_processed: int = 0
    last_at: float | None = None
    earlier: bool = False
    """Its final event was delivered and acknowledged before this watch (a state store said so)."""

    def observe(self, event: Event, now: float) -> None:
        """Take in one event for this batch."""
        if event.batch is not None:
            if self.first_at is None:
                self.first_at = now
                self.first_processed = _processed(event.batch)
            self.batch = event.batch
            self.last_at = now
        if event.is_final:
            self.final = event.kind
            self.error = event.error

    @property
    def label(self) -> str:
        """The batch's name when it has one, else its ID."""
        return self.name or self.batch_id

    @property
    def rate(self) -> float | None:
        """Items processed per second since the first snapshot, or None before any moved."""
        if self.batch is None or self.first_at is None or self.last_at is None:
            return None
        elapsed = self.last_at - self.first_at
        moved = _processed(self.batch) - self.first_processed
        if elapsed <= 0 or moved <= 0:
            return None
        return moved / elapsed

    @property
    def eta(self) -> float | None:
        """Seconds until every item is finished at the current rate; None when unknown."""
        rate = self.rate
        if self.final is not None or self.batch is None or rate is None:
            return None
        if self.batch.status == "canceling":
            return None  # canceled items finish in one step, not at the rate
        return (self.batch.total_items - self.batch.finished_items) / rate

    @property
    def status_text(self) -> str:
        """The status column: the batch's status, or ``gone`` / ``error``."""
        if self.final in (EventKind.GONE, EventKind.ERROR):
            return str(self.final)
        return "waiting" if self.batch is None else str(self.batch.status)

    @property
    def succeeded(self) -> bool:
        """Ended ``completed`` with every item ready."""
        return self.final is EventKind.DONE and self.batch is not None and self.batch.succeeded

    @property
    def auth_failed(self) -> bool:
        """The watch of this batch ended because the API key was refused."""
        return isinstance(self.error, AuthenticationError | PermissionDeniedError)

    def outcome(self) -> str:
        """How this batch ended, in a few words."""
        if self.final is EventKind.DONE and self.batch is not None:
            ended = outcome_text(self.batch)
            return f"{ended} (reported earlier)" if self.earlier else ended
        if self.earlier:
            return "ended before this watch (its final event was reported earlier)"
        if self.final is EventKind.GONE:
            return f"gone: {NO_SUCH_BATCH}"
        if self.final is EventKind.ERROR:
            return "watch failed: " + ("?" if self.error is None else failure_text(self.error))
        return "still open when the watch stopped"


def _processed(batch: Batch) -> int:
    return batch.ready_items + batch.failed_items


RETRY_SHOWN_SECONDS = 30.0
"""How long after the last retried failure a view keeps saying that requests fail."""


@dataclass(frozen=True, slots=True)
class Totals:
    """Every batch's items added up (`Board.totals`)."""

    open: int
    total: int
    ready: int
    failed: int
    canceled: int
    rate: float | None
    eta: float | None
    """Seconds until the last open batch is done; None when any open batch's ETA is unknown."""

    @property
    def finished(self) -> int:
        """Items ready, failed or canceled."""
        return self.ready + self.failed + self.canceled


@dataclass(slots=True)
class Board:
    """Every watched batch, in the order first heard of."""

    rows: dict[str, Row] = field(default_factory=dict)
    replica: bool = False
    """Watching as one of several replicas: a batch left without a final event was handed
    over to another replica (a batch still held at the end gets one), so it is theirs to
    report, and no failure here."""

    retries: int = 0
    """Failed requests the watcher retried so far (its `statistics`)."""
    last_failure: str | None = None
    """What the most recent retried request failed with."""
    failure_at: float | None = None
    """When `retries` last grew."""

    def add(self, batch_id: str, name: str | None = None) -> None:
        """Show a batch before any event for it arrived."""
        self.rows.setdefault(batch_id, Row(batch_id, name))

    def note_retries(self, retries: int, last_failure: str | None, now: float) -> bool:
        """Take in the watcher's retry count; True when it grew since the last call."""
        if retries <= self.retries:
            return False
        self.retries, self.last_failure, self.failure_at = retries, last_failure, now
        return True

    def retrying(self, now: float, within: float = RETRY_SHOWN_SECONDS) -> bool:
        """Whether a request failed and was retried in the last ``within`` seconds."""
        return self.failure_at is not None and now - self.failure_at <= within

    def retry_text(self) -> str:
        """``retrying: 3 failed request(s) so far, the last: <cause>``."""
        text = f"retrying: {self.retries} failed request(s) so far"
        return text + (f", the last: {self.last_failure}" if self.last_failure else "")

    def totals(self) -> Totals:
        """Items of every batch together, the overall rate and the time until all are done."""
        batches = [row.batch for row in self.rows.values() if row.batch is not None]
        observed = [row for row in self.rows.values() if row.first_at is not None]
        moved = sum(_processed(row.batch) - row.first_processed for row in observed if row.batch)
        span = (
            max(row.last_at or 0.0 for row in observed)
            - min(row.first_at or 0.0 for row in observed)
            if observed
            else 0.0
        )
        etas = [row.eta for row in self.rows.values() if row.final is None]
        known = [eta for eta in etas if eta is not None]
        return Totals(
            open=len(etas),
            total=sum(b.total_items for b in batches),
            ready=sum(b.ready_items for b in batches),
            failed=sum(b.failed_items for b in batches),
            canceled=sum(b.canceled_items for b in batches),
            rate=moved / span if moved > 0 and span > 0 else None,
            eta=max(known) if known and len(known) == len(etas) else None,
        )

    def restore(self, record: StoredBatch) -> None:
        """Show a batch whose final event a state store says was already acknowledged.

        The store keeps the last snapshot, not the event's kind: a terminal
        snapshot was a ``done``; anything else ended as ``gone`` or ``error``.
        """
        row = self.rows.setdefault(record.batch_id, Row(record.batch_id))
        row.batch = record.snapshot
        terminal = record.snapshot is not None and record.snapshot.is_terminal
        row.final = EventKind.DONE if terminal else EventKind.GONE
        row.earlier = True

    def observe(self, event: Event, now: float) -> Row:
        """Take in one event; returns the batch's row."""
        row = self.rows.setdefault(event.batch_id, Row(event.batch_id))
        row.observe(event, now)
        return row

    def verdict(self) -> Verdict:
        """How the watch ended: succeeded only when every batch did, key refused over all else.

        A replica answers for the batches it reported the end of, or gave up on.
        """
        rows = [row for row in self.rows.values() if not self._handed_over(row)]
        if any(row.auth_failed for row in rows):
            return Verdict.KEY_REFUSED
        if all(row.succeeded for row in rows):
            return Verdict.SUCCEEDED
        return Verdict.FAILED

    def _handed_over(self, row: Row) -> bool:
        return self.replica and row.final is None

    def summary_lines(self, elapsed: float) -> list[str]:
        """The end-of-watch summary: one line per batch, then the totals."""
        rows = list(self.rows.values())
        lines = [f"Summary: {len(rows)} batch(es) watched for {duration_text(elapsed)}"]
        for row in rows:
            counts = "" if row.batch is None else "  " + counts_text(row.batch)
            outcome = "handed over to another replica" if self._handed_over(row) else row.outcome()
            lines.append(f"  {row.label}  {outcome}{counts}")
        mine = [row for row in rows if not self._handed_over(row)]
        good = sum(row.succeeded for row in mine)
        items = [row.batch for row in mine if row.batch is not None]
        ready = sum(b.ready_items for b in items)
        failed = sum(b.failed_items for b in items)
        canceled = sum(b.canceled_items for b in items)
        moved = f" ({len(rows) - len(mine)} handed over)" if len(mine) < len(rows) else ""
        lines.append(
            f"{good} of {len(mine)} batch(es) succeeded{moved}; items: {ready} ready, "
            f"{failed} failed, {canceled} canceled"
        )
        return lines
