"""The simulated account's batches, as a pure function of time (no IO, no clock).

When a batch is created, every item gets a plan drawn from the seeded random
generator: when it starts, when it ends, and whether it fails. Items run a few
at a time per batch (``items_at_once`` slots, each taking the next queued item
when it frees up). From then on the state at time ``t`` is computed, never
stored: a status read is ``view(record, t)``. Cancel and delete are events
recorded with their time. Every method takes ``now`` (seconds on the
simulator's clock), so this model is tested by passing numbers.

Lifecycle at time ``t`` (see docs/simulator.md for the choices on UNKNOWNs):

* ``pending`` until the first item starts, then ``processing``;
* ``completed`` when the last item ends, if that is before ``expires_at``;
* after a cancel at ``c``: ``canceling`` at once; items not started by ``c``
  are canceled; started ones finish; ``canceled`` when they have all ended
  (and at least ``cancel_seconds`` after ``c``, so ``canceling`` is visible);
* ``expired`` at ``expires_at`` if it is not terminal by then: unfinished
  items (queued or processing) become canceled;
* gone (404) once deleted or ``retention`` seconds after creation.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ._sim_errors import SimulatorError, not_found
from ._sim_validate import CreateSpec, ItemSpec

BATCH_STATUSES = ("pending", "processing", "canceling", "completed", "canceled", "expired")
TERMINAL = frozenset({"completed", "canceled", "expired"})
ITEM_STATUSES = ("queued", "processing", "ready", "failed", "canceled")
# Why an item fails. The API's item error codes are "not yet wired", so some
# failures carry only a message, as the reference says a client must expect.
FAILURES: tuple[tuple[str | None, str], ...] = (
    ("asset_unavailable", "The asset could not be read."),
    (None, "The analysis could not be completed. Resubmit the request in a new batch."),
)

Wall = Callable[[float], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    """How simulated batches behave; all durations in seconds of the simulator's clock."""

    item_seconds: float = 20.0
    item_failure_rate: float = 0.0
    items_at_once: int = 4
    pending_seconds: float = 2.0
    cancel_seconds: float = 1.0
    expire_after: float = 86_400.0
    retention: float = 30 * 86_400.0
    max_active: int = 5
    missing_assets: frozenset[str] = frozenset()
    unready_assets: frozenset[str] = frozenset()
    failing_assets: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.item_seconds <= 0 or self.items_at_once < 1 or self.expire_after <= 0:
            raise ValueError("item_seconds, items_at_once and expire_after must be positive")
        if not 0.0 <= self.item_failure_rate <= 1.0:
            raise ValueError(f"item_failure_rate must be 0 to 1, got {self.item_failure_rate!r}")


@dataclass(slots=True)
class ItemPlan:
    """One item's fate, fixed at creation: start, end, and failure (code, message) or None."""

    task_id: str
    spec: ItemSpec
    start: float
    end: float
    failure: tuple[str | None, str] | None
    output_tokens: int


@dataclass(slots=True)
class BatchRecord:
    """A batch as stored: its plan and the events that happened to it."""

    batch_id: str
    seq: int
    analysis_mode: str
    model_name: str
    created: float
    expires: float
    items: list[ItemPlan]
    canceled_at: float | None = None
    deleted: bool = False

    def shift(self, seconds: float) -> None:
        """Move every time of this batch ``seconds`` into the past (ages it)."""
        self.created -= seconds
        self.expires -= seconds
        if self.canceled_at is not None:
            self.canceled_at -= seconds
        for item in self.items:
            item.start -= seconds
            item.end -= seconds


@dataclass(slots=True)
class BatchStore:
    """Every batch of the simulated account, and the seeded generator that plans them."""

    lifecycle: Lifecycle
    seed: int = 0
    records: dict[str, BatchRecord] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    _next_seq: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"batches-{self.seed}")

    def create(self, spec: CreateSpec, now: float) -> BatchRecord:
        """Add a batch planned from ``now``; 404/409 for unusable assets, 429 past the limit."""
        for item in spec.items:
            if item.asset_id in self.lifecycle.missing_assets:
                raise SimulatorError(
                    404, "resource_not_exist", f"Asset {item.asset_id!r} does not exist."
                )
            if item.asset_id in self.lifecycle.unready_assets:
                raise SimulatorError(
                    409, "asset_not_ready", f"Asset {item.asset_id!r} is not ready."
                )
        if self.active_count(now) >= self.lifecycle.max_active:
            raise SimulatorError(
                429,
                "too_many_requests",
                f"The account already has {self.lifecycle.max_active} active batches. "
                "Wait for one to finish or cancel one.",
            )
        record = BatchRecord(
            batch_id=self._new_id(),
            seq=self._next_seq,
            analysis_mode=spec.analysis_mode,
            model_name=spec.model_name,
            created=now,
            expires=now + self.lifecycle.expire_after,
            items=self._plan(spec.items, now),
        )
        self._next_seq += 1
        self.records[record.batch_id] = record
        return record

    def get(self, batch_id: str, now: float) -> BatchRecord:
        """The batch if it still exists at ``now``, else a 404 `SimulatorError`."""
        record = self.records.get(batch_id)
        if record is None or record.deleted or now >= record.created + self.lifecycle.retention:
            raise not_found(batch_id)
        return record

    def visible(self, now: float) -> list[BatchRecord]:
        """Every batch that still exists, newest first."""
        alive = [r for r in self.records.values() if not r.deleted]
        alive = [r for r in alive if now < r.created + self.lifecycle.retention]
        return sorted(alive, key=lambda r: (r.created, r.seq), reverse=True)

    def active_count(self, now: float) -> int:
        """Batches counted against the account's limit: pending, processing or canceling."""
        return sum(status_at(r, now, self.lifecycle) not in TERMINAL for r in self.visible(now))

    def cancel(self, batch_id: str, now: float) -> BatchRecord:
        """Record a cancel; 409 with the terminal status's code when already finished."""
        record = self.get(batch_id, now)
        status = status_at(record, now, self.lifecycle)
        if status in TERMINAL:
            raise SimulatorError(
                409, f"batch_{status}", f"The batch is already {status} and cannot be canceled."
            )
        if record.canceled_at is None:  # canceling again is a no-op (UNKNOWN in the API)
            record.canceled_at = now
        return record

    def delete(self, batch_id: str, now: float) -> None:
        """Delete a terminal batch; 409 ``batch_not_terminal`` otherwise."""
        record = self.get(batch_id, now)
        status = status_at(record, now, self.lifecycle)
        if status not in TERMINAL:
            raise SimulatorError(
                409,
                "batch_not_terminal",
                f"The batch is {status}; only a completed, canceled or expired batch "
                "can be deleted.",
            )
        record.deleted = True

    def _new_id(self) -> str:
        while True:
            candidate = f"{self._rng.getrandbits(96):024x}"
            if candidate not in self.records:
                return candidate

    def _plan(self, specs: Sequence[ItemSpec], now: float) -> list[ItemPlan]:
        life = self.lifecycle
        rng = self._rng
        first = now + life.pending_seconds * rng.uniform(0.5, 1.5)
        slots = [first] * life.items_at_once
        plans = []
        for spec in specs:
            start = heapq.heappop(slots)
            end = start + life.item_seconds * rng.uniform(0.5, 1.5)
            heapq.heappush(slots, end)
            # The draw happens for every item, so that naming failing assets does
            # not change the fate of the others under the same seed.
            drawn = rng.random() < life.item_failure_rate
            failure = rng.choice(FAILURES) if drawn else None
            if spec.asset_id in life.failing_assets:
                failure = FAILURES[0]  # the asset could not be read
            plans.append(
                ItemPlan(
                    task_id=self._new_id(),
                    spec=spec,
                    start=start,
                    end=end,
                    failure=failure,
                    output_tokens=rng.randint(40, 400),
                )
            )
        return plans


def terminal_at(record: BatchRecord, life: Lifecycle) -> tuple[str, float]:
    """The terminal status the batch reaches, and when (given the events so far)."""
    cancel = record.canceled_at
    if cancel is None:
        done = max(item.end for item in record.items)
        status = "completed"
    else:
        running = [item.end for item in record.items if item.start < cancel]
        done = max([cancel + life.cancel_seconds, *running])
        status = "canceled"
    return (status, done) if done <= record.expires else ("expired", record.expires)


def status_at(record: BatchRecord, now: float, life: Lifecycle) -> str:
    """The batch status at ``now``."""
    status, when = terminal_at(record, life)
    if now >= when:
        return status
    if record.canceled_at is not None and now >= record.canceled_at:
        return "canceling"
    if now >= min(item.start for item in record.items):
        return "processing"
    return "pending"


def item_status_at(record: BatchRecord, item: ItemPlan, now: float) -> str:
    """One item's status at ``now``."""
    cancel = record.canceled_at
    if cancel is not None and item.start >= cancel and now >= cancel:
        return "canceled"  # it was still queued when the batch was canceled
    if now >= record.expires and item.end > record.expires:
        return "canceled"  # unfinished at expiry
    if now < item.start:
        return "queued"
    if now < item.end:
        return "processing"
    return "failed" if item.failure else "ready"


def batch_view(record: BatchRecord, now: float, life: Lifecycle, wall: Wall) -> dict[str, Any]:
    """The ``AnalyzeBatchStatusResponse`` body at ``now``."""
    status = status_at(record, now, life)
    counts = Counter(item_status_at(record, item, now) for item in record.items)
    view: dict[str, Any] = {
        "batch_id": record.batch_id,
        "analysis_mode": record.analysis_mode,
        "model_name": record.model_name,
        "status": status,
        "total_items": len(record.items),
        "created_at": wall(record.created),
        "expires_at": wall(record.expires),
    }
    view.update({f"{name}_items": counts[name] for name in ITEM_STATUSES})
    if status in TERMINAL:
        view[f"{status}_at"] = wall(terminal_at(record, life)[1])
    return view


def created_view(record: BatchRecord, wall: Wall) -> dict[str, Any]:
    """The 201 body of create: one ``{task_id, custom_id}`` per request, in request order."""
    return {
        "batch_id": record.batch_id,
        "status": "pending",
        "total_items": len(record.items),
        "created_at": wall(record.created),
        "expires_at": wall(record.expires),
        "items": [{"task_id": i.task_id, "custom_id": i.spec.custom_id} for i in record.items],
    }


def result_lines(record: BatchRecord, now: float) -> list[dict[str, Any]]:
    """One line per item, in request order: ``data`` only if ready, ``error`` if failed."""
    lines = []
    for item in record.items:
        status = item_status_at(record, item, now)
        line: dict[str, Any] = {
            "task_id": item.task_id,
            "custom_id": item.spec.custom_id,
            "status": status,
        }
        if status == "ready":
            line["data"] = _task_result(item)
        elif status == "failed" and item.failure is not None:
            code, message = item.failure
            line["error"] = (
                {"message": message} if code is None else {"code": code, "message": message}
            )
        lines.append(line)
    return lines


def _task_result(item: ItemPlan) -> dict[str, Any]:
    spec = item.spec
    if spec.output == "segments":
        text = json.dumps(
            {
                segment: [{"start_time": 0.0, "end_time": 10.0, "metadata": {"label": "scene"}}]
                for segment in spec.segment_ids
            }
        )
    elif spec.output == "json_schema":
        text = json.dumps({"summary": f"Simulated analysis of asset {spec.asset_id}."})
    else:
        text = f"Simulated analysis of asset {spec.asset_id}."
    return {
        "generation_id": f"gen_{item.task_id}",
        "data": text,
        "finish_reason": "stop",
        "usage": {"output_tokens": item.output_tokens, "input_tokens": 45},
    }


def wall_clock(start: datetime, origin: float) -> Wall:
    """Map clock seconds to RFC 3339 UTC text: ``start`` plus the time since ``origin``."""

    def wall(seconds: float) -> str:
        moment = start + timedelta(seconds=seconds - origin)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return wall


def filter_views(
    views: Iterable[dict[str, Any]], statuses: Sequence[str], modes: Sequence[str]
) -> list[dict[str, Any]]:
    """Keep views whose status and mode are among those asked (an empty filter keeps all)."""
    return [
        v
        for v in views
        if (not statuses or v["status"] in statuses) and (not modes or v["analysis_mode"] in modes)
    ]
