"""Telemetry hooks: the domain signals of the client and the watcher, for metrics and logs.

`TelemetryHooks` is the interface: one method per signal, each a no-op until
overridden. `set_telemetry_hooks` installs any number of them; the built-in
ones are `LoggingHooks`, `PrometheusHooks` and `OTelMetricsHooks`.

Cost. With nothing installed, ``current.dispatch`` is None and every place that
reports checks just that (one module attribute read per request, nothing per
poll of the watcher that is not already there); the signals are built only
when something listens. Hooks are called synchronously on the event loop, in
the task that made the request or event: they must be cheap and must not
block. An exception from a hook is logged once per hook and method and
otherwise ignored: telemetry never breaks a request.

Labels. Endpoints are reported as templates (``/analyze/batches/{batch_id}``),
never with a batch ID, so every label's values form a small fixed set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ._models import ACTIVE_STATUSES, Batch

logger = logging.getLogger("asyncbatch")

ITEM_STATUSES: tuple[str, ...] = ("queued", "processing", "ready", "failed", "canceled")
"""The item statuses a `Batch` counts (``queued_items`` ... ``canceled_items``)."""
_BATCHES_PATH = "/analyze/batches"
_ACTIVE = frozenset(ACTIVE_STATUSES)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Where a job stands, as `TelemetryHooks.job_progress` receives it (absolute values).

    Attributes:
        items: the job's requests by status (for example ``pending``,
            ``submitted``, ``ready``, ``failed``, ``canceled``); a status absent
            counts zero.
        batches_active: the job's batches that have not ended.
        batches_done: the job's batches that have ended.
        attempts: item submissions so far, first attempts and resubmissions.
    """

    items: Mapping[str, int] = field(default_factory=dict)
    batches_active: int = 0
    batches_done: int = 0
    attempts: int = 0


class TelemetryHooks:
    """Receives asyncbatch's domain signals; subclass it and override what you need.

    Every method is called synchronously on the event loop: keep it cheap,
    never block, never await. ``endpoint`` is always a template such as
    ``/analyze/batches/{batch_id}``; a batch ID never appears in a signal
    meant as a metric label. Install with `set_telemetry_hooks`.
    """

    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        """One HTTP attempt ended: ``outcome`` is ``"ok"`` or the asyncbatch error's class name
        (``RateLimitError``, ``APITimeoutError``, ...); ``seconds`` from send to answer."""

    def retry(self, endpoint: str, reason: str, delay: float | None) -> None:
        """A failed request will be tried again after ``delay`` seconds (None: by the
        watcher's schedule); ``reason`` is the failure's error class name."""

    def rate_limit_pause(self, seconds: float) -> None:
        """A 429 paused every request of a watcher for ``seconds``."""

    def event(self, kind: str) -> None:
        """A watcher handed an event of ``kind`` (``seen``, ``status``, ..., ``error``) to its
        consumer."""

    def batches(self, *, tracked: int, open: int, active: int) -> None:
        """Batches watched changed by these amounts (added together over every watcher):
        ``tracked`` watched, ``open`` without a final event yet, ``active`` whose newest
        snapshot is ``pending``, ``processing`` or ``canceling`` (what counts against
        the account's cap of active batches). A watcher withdraws its share when it exits."""

    def items(self, changes: Mapping[str, int]) -> None:
        """Items of the open watched batches changed by status (``queued``, ``processing``,
        ``ready``, ``failed``, ``canceled``; only statuses that changed are given). Each open
        batch counts at its newest snapshot; a batch leaves the count with its final event."""

    def job_progress(self, job: str, progress: JobProgress) -> None:
        """A job's totals changed; ``job`` names it for logs (never use it as a metric label:
        a service runs jobs one after another)."""


class Dispatch:
    """What reporting code calls: turns raw facts into signals and hands them to every hook."""

    __slots__ = ("_failed", "hooks")

    def __init__(self, hooks: tuple[TelemetryHooks, ...]) -> None:
        self.hooks = hooks
        self._failed: set[tuple[int, str]] = set()

    def _fault(self, hook: TelemetryHooks, method: str) -> None:
        key = (id(hook), method)
        if key not in self._failed:
            self._failed.add(key)
            logger.exception("telemetry hook %r failed in %s(); ignored", hook, method)

    def request(self, method: str, path: str, error: BaseException | None, seconds: float) -> None:
        endpoint = endpoint_of(path)
        outcome = "ok" if error is None else type(error).__name__
        for hook in self.hooks:
            try:
                hook.request(method, endpoint, outcome, seconds)
            except Exception:
                self._fault(hook, "request")

    def retry(self, path: str, error: BaseException, delay: float | None) -> None:
        endpoint, reason = endpoint_of(path), type(error).__name__
        for hook in self.hooks:
            try:
                hook.retry(endpoint, reason, delay)
            except Exception:
                self._fault(hook, "retry")

    def rate_limit_pause(self, seconds: float) -> None:
        for hook in self.hooks:
            try:
                hook.rate_limit_pause(seconds)
            except Exception:
                self._fault(hook, "rate_limit_pause")

    def event(self, kind: str) -> None:
        for hook in self.hooks:
            try:
                hook.event(kind)
            except Exception:
                self._fault(hook, "event")

    def batches(self, tracked: int, open_: int, active: int) -> None:
        for hook in self.hooks:
            try:
                hook.batches(tracked=tracked, open=open_, active=active)
            except Exception:
                self._fault(hook, "batches")

    def items(self, changes: Mapping[str, int]) -> None:
        for hook in self.hooks:
            try:
                hook.items(changes)
            except Exception:
                self._fault(hook, "items")

    def job_progress(self, job: str, progress: JobProgress) -> None:
        for hook in self.hooks:
            try:
                hook.job_progress(job, progress)
            except Exception:
                self._fault(hook, "job_progress")


class _Current:
    """Holds the installed `Dispatch`; the hot paths read ``current.dispatch`` and check None."""

    __slots__ = ("dispatch",)

    def __init__(self) -> None:
        self.dispatch: Dispatch | None = None


current = _Current()


def set_telemetry_hooks(*hooks: TelemetryHooks) -> None:
    """Send asyncbatch's signals to ``hooks`` from now on, replacing those installed before.

    With no argument, telemetry is off again (the default). A watcher reports to
    the hooks installed when it is entered.
    """
    for hook in hooks:
        if not isinstance(hook, TelemetryHooks):
            raise TypeError(f"a telemetry hook must be a TelemetryHooks, got {hook!r}")
    current.dispatch = Dispatch(tuple(hooks)) if hooks else None


def telemetry_hooks() -> tuple[TelemetryHooks, ...]:
    """The hooks installed now (empty when telemetry is off)."""
    return () if current.dispatch is None else current.dispatch.hooks


def report_job_progress(job: str, progress: JobProgress) -> None:
    """Hand a job's totals to the installed hooks (nothing when none is installed)."""
    if current.dispatch is not None:
        current.dispatch.job_progress(job, progress)


def endpoint_of(path: str) -> str:
    """``path`` as a template: the segment after ``/analyze/batches/`` becomes ``{batch_id}``.

    Anything before ``/analyze/batches`` (the base URL's own path) is dropped.
    """
    start = path.find(_BATCHES_PATH)
    if start < 0:
        return path
    rest = path[start + len(_BATCHES_PATH) :]
    if not rest.startswith("/") or len(rest) == 1:
        return _BATCHES_PATH
    _, slash, tail = rest[1:].partition("/")
    return f"{_BATCHES_PATH}/{{batch_id}}{slash}{tail}"


class EventLike(Protocol):
    """What `WatchGauges` reads of an event (`asyncbatch.Event` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def batch_id(self) -> str: ...
    @property
    def batch(self) -> Batch | None: ...
    @property
    def is_final(self) -> bool: ...


class WatchGauges:
    """One watcher's share of the gauges, reported as changes and withdrawn at exit.

    It remembers the snapshot it counted for each open batch, so a watcher
    that resumes from a store, or a batch discarded midway, never makes a
    count drift.
    """

    __slots__ = ("_active", "_counted", "_dispatch", "_open", "_tracked")

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._tracked = self._open = self._active = 0
        self._counted: dict[str, Batch] = {}

    def events(self, events: Iterable[EventLike], tracked: int, open_: int) -> None:
        """Report each event's kind, then what the events changed."""
        items: dict[str, int] = {}
        active = 0
        for event in events:
            self._dispatch.event(str(event.kind))  # a plain str, as for every label
            before = self._counted.pop(event.batch_id, None)
            after = None if event.is_final else event.batch
            if after is not None:
                self._counted[event.batch_id] = after
            active += _add_items(items, before, -1) + _add_items(items, after, 1)
        self._report(items, active, tracked, open_)

    def forget(self, batch_id: str, tracked: int, open_: int) -> None:
        """A batch was discarded: its counts leave."""
        items: dict[str, int] = {}
        active = _add_items(items, self._counted.pop(batch_id, None), -1)
        self._report(items, active, tracked, open_)

    def counts(self, tracked: int, open_: int) -> None:
        """Batches were added (or loaded): report the new totals."""
        self._report({}, 0, tracked, open_)

    def close(self) -> None:
        """The watcher exits: withdraw everything it reported."""
        items: dict[str, int] = {}
        active = sum(_add_items(items, b, -1) for b in self._counted.values())
        self._counted.clear()
        self._report(items, active, 0, 0)

    def _report(self, items: dict[str, int], active: int, tracked: int, open_: int) -> None:
        changes = {status: n for status, n in items.items() if n}
        if changes:
            self._dispatch.items(changes)
        self._active += active
        tracked_change, open_change = tracked - self._tracked, open_ - self._open
        if tracked_change or open_change or active:
            self._tracked, self._open = tracked, open_
            self._dispatch.batches(tracked_change, open_change, active)


def _add_items(items: dict[str, int], batch: Batch | None, sign: int) -> int:
    """Add ``batch``'s item counts times ``sign`` to ``items``; ``sign`` if it is active."""
    if batch is None:
        return 0
    for status in ITEM_STATUSES:
        count = getattr(batch, f"{status}_items")
        if count:
            items[status] = items.get(status, 0) + sign * count
    return sign if batch.status in _ACTIVE else 0
