"""The simulated account as the endpoints see it: the batch model read at the clock's time.

`SimulatedAccount` is synchronous and knows nothing of HTTP: each method is one
endpoint's action and returns the JSON-ready body, or raises `SimulatorError`.
It also remembers the last few distinct snapshots it served of each batch, so
that a *stale read* can answer one of them instead of the current state, calls
``on_change`` after a create, cancel or delete (the webhook sender's schedule
moves), and adds each batch's ``webhooks[]`` record from ``webhook_records``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ._clocks import Clock
from ._sim_errors import bad_request
from ._sim_model import (
    BATCH_STATUSES,
    BatchRecord,
    BatchStore,
    Lifecycle,
    Wall,
    batch_view,
    created_view,
    filter_views,
    result_lines,
    wall_clock,
)
from ._sim_validate import ANALYSIS_MODES, parse_create

MAX_PAGE_LIMIT = 50
DEFAULT_PAGE_LIMIT = 10
_HISTORY = 3  # distinct snapshots remembered per batch for stale reads


class SimulatedAccount:
    """Every endpoint's action on one account's batches, at the clock's current time."""

    def __init__(self, lifecycle: Lifecycle, *, seed: int, clock: Clock, start: datetime) -> None:
        self.lifecycle = lifecycle
        self.store = BatchStore(lifecycle, seed=seed)
        self.clock = clock
        self._start = start
        self._origin: float | None = None
        self._wall: Wall | None = None
        self._served: dict[str, list[dict[str, Any]]] = {}
        self.on_change: Callable[[], None] | None = None
        self.webhook_records: Callable[[str], list[dict[str, Any]] | None] | None = None

    def now(self) -> float:
        """The clock's time; the first reading is the origin of the wall-clock timestamps."""
        now = self.clock()
        if self._origin is None:
            self._set_origin(now)
        return now

    @property
    def wall(self) -> Wall:
        """Clock seconds to RFC 3339 text."""
        if self._wall is None:
            self._set_origin(self.clock())
        assert self._wall is not None  # noqa: S101 - _set_origin set it
        return self._wall

    def unix(self, seconds: float) -> float:
        """Clock seconds to Unix seconds on the same timeline as the timestamps."""
        if self._origin is None:
            self._set_origin(self.clock())
        assert self._origin is not None  # noqa: S101 - _set_origin set it
        return self._start.timestamp() + seconds - self._origin

    def clock_at(self, unix: float) -> float:
        """The clock reading at which the timestamps say ``unix`` (the inverse of `unix`)."""
        return unix - self.unix(0.0)

    def _set_origin(self, now: float) -> None:
        self._origin = now
        self._wall = wall_clock(self._start, now)

    def view(self, record: BatchRecord, now: float) -> dict[str, Any]:
        """The batch object at ``now``, with ``webhooks[]`` once its notification was sent."""
        view = batch_view(record, now, self.lifecycle, self.wall)
        if self.webhook_records is not None:
            records = self.webhook_records(record.batch_id)
            if records is not None:
                view["webhooks"] = records
        return view

    def changed(self) -> None:
        """Tell ``on_change`` that batches were added, canceled, removed or moved in time."""
        if self.on_change is not None:
            self.on_change()

    def create(self, body: object) -> dict[str, Any]:
        """``POST /analyze/batches``: the 201 body."""
        spec = parse_create(body)
        created = created_view(self.store.create(spec, self.now()), self.wall)
        self.changed()
        return created

    def retrieve(self, batch_id: str, *, stale: bool = False) -> dict[str, Any]:
        """``GET /analyze/batches/{id}``: the batch now, or an older snapshot when ``stale``."""
        now = self.now()
        view = self.view(self.store.get(batch_id, now), now)
        return self._stale(view) if stale else self._remember(view)

    def list_page(
        self,
        *,
        statuses: Sequence[str] = (),
        modes: Sequence[str] = (),
        page: int = 1,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        stale: bool = False,
    ) -> dict[str, Any]:
        """``GET /analyze/batches``: one page, newest first, filters OR-ed within a key."""
        check_list_query(statuses, modes, page, page_limit)
        now = self.now()
        views = [self.view(r, now) for r in self.store.visible(now)]
        chosen = filter_views(views, statuses, modes)
        data = chosen[(page - 1) * page_limit : page * page_limit]
        data = [self._stale(v) if stale else self._remember(v) for v in data]
        return {
            "data": data,
            "page_info": {
                "limit_per_page": page_limit,
                "page": page,
                "total_page": math.ceil(len(chosen) / page_limit),
                "total_results": len(chosen),
            },
        }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """``POST .../cancel``: the batch at the time of the request (``canceling``)."""
        now = self.now()
        record = self.store.cancel(batch_id, now)
        self.changed()
        return self._remember(self.view(record, now))

    def delete(self, batch_id: str) -> None:
        """``DELETE /analyze/batches/{id}``."""
        self.store.delete(batch_id, self.now())
        self._served.pop(batch_id, None)
        self.changed()

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """``GET .../results``: one line per item."""
        now = self.now()
        return result_lines(self.store.get(batch_id, now), now)

    def _remember(self, view: dict[str, Any]) -> dict[str, Any]:
        history = self._served.setdefault(view["batch_id"], [])
        if not history or history[-1] != view:
            history.append(view)
            del history[:-_HISTORY]
        return view

    def _stale(self, view: dict[str, Any]) -> dict[str, Any]:
        """The newest served snapshot that differs from ``view``; ``view`` if none does."""
        history = self._served.get(str(view["batch_id"]), [])
        older = [old for old in history if old != view]
        return older[-1] if older else view


def check_list_query(
    statuses: Sequence[str], modes: Sequence[str], page: int, page_limit: int
) -> None:
    """400 for unknown filter values, ``page < 1`` or ``page_limit`` outside 1 to 50."""
    unknown = [s for s in statuses if s not in BATCH_STATUSES]
    if unknown:
        raise bad_request(f"Unknown status filter {unknown[0]!r}.")
    unknown = [m for m in modes if m not in ANALYSIS_MODES]
    if unknown:
        raise bad_request(f"Unknown analysis_mode filter {unknown[0]!r}.")
    if page < 1:
        raise bad_request("page must be at least 1.")
    if not 1 <= page_limit <= MAX_PAGE_LIMIT:
        raise bad_request(f"page_limit must be 1 to {MAX_PAGE_LIMIT}.")
