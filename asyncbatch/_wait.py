"""The one-call forms: wait for a batch to end, or create one and wait for it.

Both are a `Watcher` over one batch: the same polling, rate-limit pauses and
retries, with the final event turned into a return value or an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import WaitTimeoutError
from ._events import Event, EventKind
from ._models import Batch

if TYPE_CHECKING:
    from ._client import Client


async def wait_for_batch(
    client: Client, batch_id: str, *, timeout: float | None = None, **watch_options: Any
) -> Batch:
    """Poll ``batch_id`` until it is terminal and return that snapshot.

    Raises `NotFoundError` when the batch does not exist, `WaitTimeoutError`
    when ``timeout`` seconds pass first, and the error that made the watcher
    give up otherwise (for example `AuthenticationError`). ``watch_options``
    are `Watcher` options such as ``min_interval``.
    """
    from ._watcher import Watcher  # noqa: PLC0415 - the watcher imports the client

    options: dict[str, Any] = {"stagger": 0.0, **watch_options}
    async with Watcher(client, [batch_id], deadline=timeout, **options) as watcher:
        async for event in watcher:
            if event.kind is EventKind.DONE and event.batch is not None:
                return event.batch
            if isinstance(event.error, WaitTimeoutError):
                raise _timed_out(batch_id, event, timeout) from None
            if event.error is not None:
                raise event.error
    raise AssertionError("a watched batch always ends with a final event")  # pragma: no cover


def _timed_out(batch_id: str, event: Event, timeout: float | None) -> WaitTimeoutError:
    """The timeout, naming the batch, how far it got and why polling failed, if it did."""
    seen = "never answered" if event.batch is None else f"still {event.batch.status}"
    text = f"batch {batch_id} did not end within timeout={timeout:g} s ({seen})"
    cause = str(event.error).partition("; the last failed request: ")[2]
    return WaitTimeoutError(text + (f"; the last failed request: {cause}" if cause else ""))
