"""What a job hands back: each request's `JobOutcome`, its `Attempt` history, and
`JobStatistics`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from .._models import ItemError, TaskResult


class OutcomeStatus(enum.StrEnum):
    """A request's final status in a job."""

    READY = "ready"
    FAILED = "failed"
    CANCELED = "canceled"


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try of a request: the batch it ran in and how it ended there."""

    number: int
    batch_id: str
    status: str
    task_id: str | None = None
    error: ItemError | None = None


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """A request's final outcome, delivered once per job.

    Attributes:
        line: the request's 1-based position in the input (its line in a file).
        custom_id: the caller's ``custom_id``, or None.
        status: ``ready``, ``failed`` (after ``max_attempts``, or refused) or ``canceled``.
        data: the analysis, when ready.
        error: why it failed or was canceled, from its last attempt.
        attempts: batches the request went into.
        batch_id: the batch of the attempt that made it final (None if it never ran).
        task_id: that attempt's task.
        history: every attempt, oldest first.
    """

    line: int
    custom_id: str | None
    status: OutcomeStatus
    data: TaskResult | None = None
    error: ItemError | None = None
    attempts: int = 0
    batch_id: str | None = None
    task_id: str | None = None
    history: tuple[Attempt, ...] = ()

    def to_line(self) -> dict[str, object]:
        """The ``--out`` line of ``asyncbatch run`` (design §9), as builtins."""
        return {
            "custom_id": self.custom_id,
            "line": self.line,
            "status": str(self.status),
            "data": msgspec.to_builtins(self.data),
            "error": msgspec.to_builtins(self.error),
            "attempts": self.attempts,
            "batch_id": self.batch_id,
            "task_id": self.task_id,
        }


@dataclass(frozen=True, slots=True)
class JobStatistics:
    """A job's counters right now (`Job.statistics`).

    ``items`` counts requests by state: ``waiting`` (not in a batch), ``running`` (in
    one), and the final ``ready``, ``failed`` and ``canceled``.
    """

    total: int
    items: dict[str, int]
    batches_active: int
    batches_done: int
    attempts: int
    delivered: int
    rate: float | None
    """Requests made final per second in this run, or None before the first."""
    eta: float | None
    """Seconds until every request is final at that rate, or None."""
    slots_in_use: int
    slots_free: int

    @property
    def finished(self) -> int:
        """Requests whose outcome is final."""
        return sum(self.items.get(s, 0) for s in OutcomeStatus)
