"""The watcher's workers take due work themselves; they must still let the event loop run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable

from asyncbatch import Batch, EventKind, RetryPolicy, Watcher, WatchOptions
from tests._snapshots import snapshot

IDS = ["68f4ddaf8aaa60d33df0e801", "68f4ddaf8aaa60d33df0e802"]


class _InstantReader:
    """Answers every poll at once, without ever suspending, as an in-memory cache would."""

    def __init__(self) -> None:
        self.polls = 0

    async def retrieve(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> Batch:
        self.polls += 1
        return snapshot("processing", batch_id=batch_id, queued=1, processing=1)

    async def list(
        self,
        *,
        status: Iterable[str] | None = None,
        page_limit: int = 50,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[Batch, None]:
        raise AssertionError("a per-ID watch does not sweep")
        yield  # pragma: no cover - makes this an async generator


class _Source:
    def __init__(self) -> None:
        self.batches = _InstantReader()


def test_a_reader_that_never_suspends_does_not_starve_the_loop() -> None:
    """On a real clock, with batches due again a microsecond after each answer and a reader
    that never suspends, a worker could poll forever without yielding; it yields now and
    then, so the consumer gets its events and other tasks run (this would hang otherwise)."""
    source = _Source()

    async def main() -> list[EventKind]:
        options: WatchOptions = {
            "min_interval": 1e-6,
            "max_interval": 1e-6,
            "jitter": 0.0,
            "stagger": 0.0,
            "max_concurrency": 1,
            "strategy": "per_id",
            "stop_when_done": False,
        }
        async with Watcher(source, IDS, **options) as watcher:
            kinds = [(await anext(watcher)).kind for _ in IDS]
            await asyncio.sleep(0)  # this task runs again while the batches stay due
            polls = source.batches.polls
            await asyncio.sleep(0)
            assert source.batches.polls > polls  # and polling went on meanwhile
        return kinds

    assert asyncio.run(main()) == [EventKind.SEEN, EventKind.SEEN]
