"""Watch events and the rules that turn two snapshots into one.

Everything that decides *which* event a new snapshot produces lives in this
file, as data plus one pure function, `classify`:

* A snapshot is **stale** when it is behind the last one we delivered: its
  status ranks lower (``pending`` < ``processing`` < ``canceling`` <
  terminal), fewer items are finished, or more items are queued. Servers behind
  load balancers serve such reads; they are ignored, never reported, so a
  batch's events never go backwards.
* Otherwise the first rule that holds names the event: a terminal status is
  ``done``; a changed status is ``status``; changed counters are ``progress``;
  an identical snapshot produces nothing.

An unknown status from a newer API has no rank, so it never makes a snapshot
stale by itself (the counters still do), and it is not terminal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._models import Batch, BatchStatus


class EventKind(enum.StrEnum):
    """What happened to a watched batch."""

    SEEN = "seen"
    """The first snapshot of a batch that is not yet terminal."""
    STATUS = "status"
    """The status changed, e.g. ``pending`` to ``processing`` or to ``canceling``."""
    PROGRESS = "progress"
    """Same status, different item counters."""
    DONE = "done"
    """The batch is ``completed``, ``canceled`` or ``expired``. Final."""
    GONE = "gone"
    """The API says the batch does not exist (404). Final."""
    ERROR = "error"
    """The watcher gave up on the batch (auth, deadline, bodies that never decode). Final."""


FINAL_KINDS = frozenset({EventKind.DONE, EventKind.GONE, EventKind.ERROR})


@dataclass(frozen=True, slots=True)
class Event:
    """One change to one batch, in order, never repeated.

    Attributes:
        kind: what happened.
        batch_id: the batch it happened to.
        batch: the newest snapshot, or None for ``gone`` and for ``error``
            before any snapshot arrived.
        previous: the snapshot delivered before this one, or None.
        error: for ``gone`` and ``error``, the exception that ended the watch.
    """

    kind: EventKind
    batch_id: str
    batch: Batch | None = None
    previous: Batch | None = None
    error: BaseException | None = None

    @property
    def is_final(self) -> bool:
        """True for ``done``, ``gone`` and ``error``: nothing follows for this batch."""
        return self.kind in FINAL_KINDS


# How far along a status is. Terminal statuses share the top rank: a batch never
# moves from one terminal status to another.
STATUS_RANK: dict[str, int] = {
    BatchStatus.PENDING: 0,
    BatchStatus.PROCESSING: 1,
    BatchStatus.CANCELING: 2,
    BatchStatus.COMPLETED: 3,
    BatchStatus.CANCELED: 3,
    BatchStatus.EXPIRED: 3,
}


def is_stale(previous: Batch, snapshot: Batch) -> bool:
    """True when ``snapshot`` is older than ``previous`` and must be ignored."""
    old_rank = STATUS_RANK.get(previous.status)
    new_rank = STATUS_RANK.get(snapshot.status)
    if old_rank is not None and new_rank is not None and new_rank < old_rank:
        return True
    if previous.is_terminal and not snapshot.is_terminal:
        return True
    return (
        snapshot.finished_items < previous.finished_items
        or snapshot.queued_items > previous.queued_items
    )


def classify(previous: Batch | None, snapshot: Batch) -> EventKind | None:
    """The event ``snapshot`` produces after ``previous``, or None for no event."""
    if previous is None:
        return EventKind.DONE if snapshot.is_terminal else EventKind.SEEN
    if is_stale(previous, snapshot):
        return None
    if snapshot.is_terminal:
        return EventKind.DONE
    if snapshot.status != previous.status:
        return EventKind.STATUS
    if _counters(snapshot) != _counters(previous):
        return EventKind.PROGRESS
    return None


def _counters(batch: Batch) -> tuple[int, int, int, int, int]:
    return (
        batch.queued_items,
        batch.processing_items,
        batch.ready_items,
        batch.failed_items,
        batch.canceled_items,
    )
