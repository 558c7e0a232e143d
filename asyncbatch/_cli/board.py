"""What ``asyncbatch watch`` knows of each batch, fed by watch events (pure, no IO).

A `Board` keeps one `Row` per batch: the newest snapshot, the final event if
one came, and the first observation, from which it derives a rate (items
processed, ready or failed, per second since the watch began; canceled items
are not processed, they stop at once) and an ETA. It also decides the
command's exit status and writes the end-of-watch summary. Times are plain
numbers on any monotonic clock, passed in, so every figure is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._errors import AuthenticationError, PermissionDeniedError
from .._events import Event, EventKind
from .._models import Batch
from .._stores.memory import StoredBatch
from .render import counts_text, duration_text, error_text, outcome_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(slots=True)
class Row:
    """One watched batch."""

    batch_id: str
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
            return "gone (no such batch: wrong ID, deleted, or past 30 days)"
        if self.final is EventKind.ERROR:
            return f"watch failed: {error_text(self.error)}"
        return "still open when the watch stopped"


def _processed(batch: Batch) -> int:
    return batch.ready_items + batch.failed_items


@dataclass(slots=True)
class Board:
    """Every watched batch, in the order first heard of."""

    rows: dict[str, Row] = field(default_factory=dict)
    replica: bool = False
    """Watching as one of several replicas: a batch left without a final event was handed
    over to another replica (a batch still held at the end gets one), so it is theirs to
    report, and no failure here."""

    def add(self, batch_id: str) -> None:
        """Show a batch before any event for it arrived."""
        self.rows.setdefault(batch_id, Row(batch_id))

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

    def exit_status(self) -> int:
        """0 when every batch succeeded, 2 when the key was refused, else 1.

        A replica answers for the batches it reported the end of, or gave up on.
        """
        rows = [row for row in self.rows.values() if not self._handed_over(row)]
        if any(row.auth_failed for row in rows):
            return EXIT_USAGE
        if rows and all(row.succeeded for row in rows):
            return EXIT_OK
        return EXIT_FAILED if rows else EXIT_OK

    def _handed_over(self, row: Row) -> bool:
        return self.replica and row.final is None

    def summary_lines(self, elapsed: float) -> list[str]:
        """The end-of-watch summary: one line per batch, then the totals."""
        rows = list(self.rows.values())
        lines = [f"Summary: {len(rows)} batch(es) watched for {duration_text(elapsed)}"]
        for row in rows:
            counts = "" if row.batch is None else "  " + counts_text(row.batch)
            outcome = "handed over to another replica" if self._handed_over(row) else row.outcome()
            lines.append(f"  {row.batch_id}  {outcome}{counts}")
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
