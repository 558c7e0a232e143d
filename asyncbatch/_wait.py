"""The one-call forms: wait for a batch to end, or create one and wait for it.

Both are a `Watcher` over one batch: the same polling, rate-limit pauses and
retries, with the final event turned into a return value or an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._events import EventKind
from ._models import Batch
from ._watcher import BatchReader, Watcher


@dataclass(frozen=True, slots=True)
class _Reads:
    """A `BatchSource` made of the ``batches`` reads alone, so `wait` needs no client."""

    batches: BatchReader


async def wait_for_batch(
    batches: BatchReader, batch_id: str, *, timeout: float | None = None, **watch_options: Any
) -> Batch:
    """Poll ``batch_id`` until it is terminal and return that snapshot.

    Raises `NotFoundError` when the batch does not exist, `WaitTimeoutError`
    when ``timeout`` seconds pass first, and the error that made the watcher
    give up otherwise (for example `AuthenticationError`). ``watch_options``
    are `Watcher` options such as ``min_interval``.
    """
    options: dict[str, Any] = {"stagger": 0.0, **watch_options}
    async with Watcher(_Reads(batches), [batch_id], deadline=timeout, **options) as watcher:
        async for event in watcher:
            if event.kind is EventKind.DONE and event.batch is not None:
                return event.batch
            if event.error is not None:
                raise event.error
    raise AssertionError("a watched batch always ends with a final event")  # pragma: no cover
