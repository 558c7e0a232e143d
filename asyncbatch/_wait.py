"""The one-call forms: wait for a batch to end, or create one and wait for it.

Both are a `Watcher` over one batch: the same polling, rate-limit pauses and
retries, with the final event turned into a return value or an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

from ._errors import WaitTimeoutError
from ._events import Event, EventKind
from ._models import Batch
from ._watcher import BatchReader, Watcher, WatchOptions


@dataclass(frozen=True, slots=True)
class _Reads:
    """A `BatchSource` made of the ``batches`` reads alone, so `wait` needs no client."""

    batches: BatchReader


def check_watch_options(batches: BatchReader, options: WatchOptions) -> None:
    """Raise what `Watcher` raises for ``options`` (TypeError for an unknown one, ValueError for
    a bad value), so that `create_and_wait` refuses them before it creates a billed batch."""
    Watcher(_Reads(batches), (), **options)


async def wait_for_batch(
    batches: BatchReader, batch_id: str, **options: Unpack[WatchOptions]
) -> Batch:
    """Poll ``batch_id`` until it is terminal and return that snapshot.

    Raises `NotFoundError` when the batch does not exist, `WaitTimeoutError`
    when ``timeout`` seconds pass first, and the error that made the watcher
    give up otherwise (for example `AuthenticationError`). ``options``
    are `Watcher` options such as ``min_interval``.
    """
    options.setdefault("stagger", 0.0)  # one batch: nothing to spread
    async with Watcher(_Reads(batches), [batch_id], **options) as watcher:
        async for event in watcher:
            if event.kind is EventKind.DONE and event.batch is not None:
                return event.batch
            if isinstance(event.error, WaitTimeoutError):
                raise _timed_out(batch_id, event, options.get("timeout")) from None
            if event.error is not None:
                raise event.error
    raise AssertionError("a watched batch always ends with a final event")  # pragma: no cover


def _timed_out(batch_id: str, event: Event, timeout: float | None) -> WaitTimeoutError:
    """The timeout, naming the batch, how far it got and why polling failed, if it did."""
    seen = "never answered" if event.batch is None else f"still {event.batch.status}"
    text = f"batch {batch_id} did not end within timeout={timeout:g} s ({seen})"
    cause = str(event.error).partition("; the last failed request: ")[2]
    return WaitTimeoutError(text + (f"; the last failed request: {cause}" if cause else ""))
