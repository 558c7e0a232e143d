"""Watch events and the rules that turn two snapshots into one.

Everything that decides *which* event a new snapshot produces lives in this
file, as data plus pure functions (`classify`, `is_stale`, `is_plausible`):

* A **terminal** snapshot always ends a batch that is not yet final: no glitch
  in an earlier snapshot's counters can hide it.
* A snapshot is **stale** when it is behind what we delivered: its status ranks
  lower (``pending`` < ``processing`` < ``canceling`` < terminal) than the
  highest known status delivered so far (the ``floor``, which survives a detour
  through a status we do not know), or, at the same rank, fewer items are
  finished or more are queued. Servers behind load balancers serve such reads;
  they are ignored, never reported, so a batch's events never go backwards.
* A non-terminal snapshot whose counters cannot be true (a negative counter, or
  more items in one state than in the batch) is **implausible**: it is ignored
  like a stale read, except as the very first snapshot, and counters of an
  implausible baseline never make a later snapshot stale.
* Otherwise the first rule that holds names the event: a changed status is
  ``status``; changed counters are ``progress``; an identical snapshot
  produces nothing.

An unknown status from a newer API has no rank of its own, so it is judged
against the floor, and it is not terminal.
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


NO_RANK = -1
"""The floor before any known status was delivered."""


def rank(batch: Batch, floor: int = NO_RANK) -> int:
    """How far along ``batch`` is; an unknown status sits at ``floor``."""
    return STATUS_RANK.get(batch.status, floor)


def is_plausible(batch: Batch) -> bool:
    """False when the counters cannot be true: one is negative or exceeds the total."""
    counters = _counters(batch)
    total = batch.total_items
    return min(counters) >= 0 and max(counters) <= total and batch.finished_items <= total


def is_stale(previous: Batch, snapshot: Batch, floor: int = NO_RANK) -> bool:
    """True when ``snapshot`` is older than ``previous`` and must be ignored.

    ``floor`` is the highest rank delivered so far (see `rank`), so that a
    detour through an unknown status cannot let the status go back.
    """
    if snapshot.is_terminal:
        return previous.is_terminal
    if previous.is_terminal or not is_plausible(snapshot):
        return True
    old_rank = max(floor, rank(previous))
    new_rank = rank(snapshot, old_rank)
    if new_rank != old_rank or not is_plausible(previous):
        return new_rank < old_rank
    return (
        snapshot.finished_items < previous.finished_items
        or snapshot.queued_items > previous.queued_items
    )


def classify(previous: Batch | None, snapshot: Batch, floor: int = NO_RANK) -> EventKind | None:
    """The event ``snapshot`` produces after ``previous``, or None for no event."""
    if previous is None:
        return EventKind.DONE if snapshot.is_terminal else EventKind.SEEN
    # An unchanged snapshot, what most polls bring, is tested first: the rules give
    # no event for it either (it is stale, or has the same status and counters),
    # and comparing costs a tenth of applying them.
    if snapshot == previous or is_stale(previous, snapshot, floor):
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
