"""The simulator's webhook outbox: which deliveries are due, as a pure function of time.

Batches are computed lazily from the clock (`_sim_model`), so nothing tells
the outbox that an item finished: `Outbox.collect` looks at the batches at
``now`` and queues one delivery per endpoint for every item that became
``ready`` or ``failed`` (``analyze.task.ready`` / ``analyze.task.failed``)
and for every batch that became terminal (``analyze.batch.<status>``, our
assumption for the undocumented batch completion notification).
`Outbox.next_time` says when the next one will be due, so a sender can
sleep until then. No IO and no clock: every method takes ``now``.

Retries: a failed attempt is tried again ``backoff * 2**(n-1)`` seconds after
attempt ``n``, up to ``attempts`` attempts in all; then the delivery is given
up with its last error. The batch notification's outcome per endpoint is the
batch's ``webhooks[]`` record (`Outbox.batch_records`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._sim_model import (
    TERMINAL,
    BatchRecord,
    ItemPlan,
    Lifecycle,
    Wall,
    batch_view,
    item_status_at,
    terminal_at,
)

TASK_EVENT = "analyze.task.{status}"
BATCH_EVENT = "analyze.batch.{status}"
"""Our assumed type of the batch completion notification (``analyze.batch.completed`` ...)."""


@dataclass(slots=True)
class Delivery:
    """One event on its way to one endpoint; retries share its ``event_id`` and ``body``."""

    event_id: str
    type: str
    batch_id: str
    url: str
    body: bytes
    next_at: float
    attempts: int = 0
    delivered: bool = False
    given_up: bool = False
    last_error: str | None = None

    @property
    def settled(self) -> bool:
        """Delivered, or no attempt left."""
        return self.delivered or self.given_up

    def record(self) -> dict[str, Any]:
        """The batch's ``webhooks[]`` entry: ``last_error`` only when not delivered."""
        entry: dict[str, Any] = {
            "url": self.url,
            "delivered": self.delivered,
            "attempts": self.attempts,
        }
        if not self.delivered and self.last_error is not None:
            entry["last_error"] = self.last_error
        return entry


@dataclass(slots=True)
class _Cursor:
    """A batch's items in order of their end, and how many of them were looked at."""

    by_end: list[ItemPlan]
    seen: int = 0
    batch_sent: bool = False


@dataclass(slots=True)
class Outbox:
    """Deliveries to queue, send and retry, for the batches of one simulated account.

    ``stamp`` gives the Unix time that dates each event's ``created_at``.
    """

    urls: Sequence[str]
    lifecycle: Lifecycle
    stamp: Callable[[], float]
    attempts: int = 3
    backoff: float = 2.0
    seed: int = 0
    pending: list[Delivery] = field(default_factory=list)
    _cursors: dict[str, _Cursor] = field(default_factory=dict)
    _batch_deliveries: dict[str, list[Delivery]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0:
            raise ValueError("webhook attempts must be at least 1 and the backoff not negative")
        self._rng = random.Random(f"webhook-ids-{self.seed}")

    def collect(self, records: Iterable[BatchRecord], now: float, wall: Wall) -> None:
        """Queue a delivery per endpoint for every item and batch that finished by ``now``."""
        for record in records:
            cursor = self._cursor(record)
            # Items end in this order; one whose end has passed never changes again.
            while cursor.seen < len(cursor.by_end) and cursor.by_end[cursor.seen].end <= now:
                item = cursor.by_end[cursor.seen]
                cursor.seen += 1
                status = item_status_at(record, item, now)
                if status in ("ready", "failed"):
                    self._queue(
                        TASK_EVENT.format(status=status),
                        record,
                        _task_data(record, item, status),
                        now,
                    )
            if not cursor.batch_sent and terminal_at(record, self.lifecycle)[1] <= now:
                cursor.batch_sent = True
                view = batch_view(record, now, self.lifecycle, wall)
                status = view["status"]
                assert status in TERMINAL  # noqa: S101 - terminal_at says it is
                batch = self._queue(BATCH_EVENT.format(status=status), record, view, now)
                self._batch_deliveries[record.batch_id] = batch

    def next_time(self, records: Iterable[BatchRecord]) -> float | None:
        """When the next delivery falls due (a retry, an item end, a batch end); None if never."""
        times = [d.next_at for d in self.pending]
        for record in records:
            cursor = self._cursor(record)
            if cursor.seen < len(cursor.by_end):
                times.append(cursor.by_end[cursor.seen].end)
            if not cursor.batch_sent:
                times.append(terminal_at(record, self.lifecycle)[1])
        return min(times, default=None)

    def due(self, now: float) -> list[Delivery]:
        """Deliveries whose next attempt is due, oldest first."""
        return [d for d in self.pending if d.next_at <= now]

    def settle(self, delivery: Delivery, now: float, error: str | None) -> None:
        """Record one attempt's outcome: delivered (``error`` None), retried later, or given up."""
        delivery.attempts += 1
        if error is None:
            delivery.delivered = True
            delivery.last_error = None
        else:
            delivery.last_error = error
            if delivery.attempts >= self.attempts:
                delivery.given_up = True
            else:
                delivery.next_at = now + self.backoff * 2 ** (delivery.attempts - 1)
        if delivery.settled:
            self.pending.remove(delivery)

    def batch_records(self, batch_id: str) -> list[dict[str, Any]] | None:
        """The batch's ``webhooks[]``: present once the batch notification was first tried."""
        deliveries = [d for d in self._batch_deliveries.get(batch_id, ()) if d.attempts]
        return [d.record() for d in deliveries] if deliveries else None

    def _cursor(self, record: BatchRecord) -> _Cursor:
        cursor = self._cursors.get(record.batch_id)
        if cursor is None:
            by_end = sorted(record.items, key=lambda item: item.end)
            cursor = self._cursors[record.batch_id] = _Cursor(by_end)
        return cursor

    def _queue(
        self, type_: str, record: BatchRecord, data: dict[str, Any], now: float
    ) -> list[Delivery]:
        event_id = f"whe_{self._rng.getrandbits(128):032x}"
        created = datetime.fromtimestamp(self.stamp(), UTC)
        envelope = {
            "id": event_id,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": type_,
            "data": data,
        }
        body = json.dumps(envelope).encode()
        deliveries = [
            Delivery(event_id, type_, record.batch_id, url, body, next_at=now) for url in self.urls
        ]
        self.pending.extend(deliveries)
        return deliveries


def _task_data(record: BatchRecord, item: ItemPlan, status: str) -> dict[str, Any]:
    """A task event's ``data``: the documented ``id`` and ``status``, plus ``custom_id`` and
    ``batch_id`` (the latter our addition, see docs/simulator.md)."""
    return {
        "id": item.task_id,
        "batch_id": record.batch_id,
        "custom_id": item.spec.custom_id,
        "status": status,
    }
