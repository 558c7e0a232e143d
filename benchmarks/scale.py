"""Memory per watched batch and scheduling cost per poll at 1k, 10k and 100k batches.

Run: ``.venv/bin/python -m benchmarks.scale`` (``--help`` for sizes).

Two layers, neither touching the network:

* the tracker alone (`asyncbatch._tracker.Tracker`): every batch added and
  given one snapshot, then the poll loop (``due`` → ``observed`` → jump to
  ``next_wakeup``) runs ``--polls`` polls, five times (the median is shown);
* the watcher over a fast fake client whose ``retrieve`` decodes a canned body
  after one event-loop checkpoint. Its poll interval is a microsecond, so
  every batch is due at all times and the watcher polls back to back (8 at
  once, the default) with its whole schedule in the heap: what is timed is
  the scheduling, not waiting. Every batch is seen once, then ``--polls``
  more polls are timed.

Memory is what `tracemalloc` sees still allocated once every batch holds a
snapshot (the snapshots included), divided by the number of batches; an idle
batch is one that has had its ``seen`` event and is waiting for its next poll.
CPU is `time.process_time` per poll, measured in a run without tracemalloc.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import anyio

from asyncbatch import PollPolicy
from asyncbatch._models import Batch, batch_decoder
from asyncbatch._tracker import Strategy, Tracker
from asyncbatch._watcher import Watcher

from ._bodies import BATCH_ID, PROCESSING_BODY
from ._report import machine_line, table

if TYPE_CHECKING:
    from asyncbatch import Client

SIZES = (1_000, 10_000, 100_000)


def _ids(count: int) -> list[str]:
    return [f"{n:024x}" for n in range(count)]


def _bodies(ids: Sequence[str]) -> dict[str, bytes]:
    """One status body per ID, so that each decoded snapshot is its own object, as in life."""
    template = PROCESSING_BODY.replace(BATCH_ID.encode(), b"%s")
    return {batch_id: template % batch_id.encode() for batch_id in ids}


@dataclass(frozen=True)
class Figures:
    """One size: bytes per watched batch, and CPU ns per poll, for tracker and watcher."""

    batches: int
    tracker_bytes: float
    tracker_ns: float
    watcher_bytes: float
    watcher_ns: float


def _measure_memory(build: Callable[[], object], count: int) -> float:
    """Bytes still allocated by ``build()`` (kept alive while measured), per batch."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / count


# -- the tracker alone ------------------------------------------------------------


def _seen_tracker(bodies: dict[str, bytes]) -> Tracker:
    """A tracker with every batch added and given its first snapshot."""
    tracker = Tracker(PollPolicy(), strategy=Strategy.PER_ID, rng=random.Random(1))
    for batch_id in bodies:
        tracker.add(batch_id, 0.0)
    now = PollPolicy().stagger
    for action in tracker.due(now):
        assert isinstance(action, str)
        tracker.observed(action, batch_decoder.decode(bodies[action]), now)
    return tracker


def _tracker_ns_per_poll(bodies: dict[str, bytes], polls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of ``polls`` polls each: one run is only milliseconds."""
    tracker = _seen_tracker(bodies)
    snapshots: dict[str, Batch] = {}
    for batch_id in bodies:
        state = tracker.tracked(batch_id)
        assert state is not None
        assert state.last is not None
        snapshots[batch_id] = state.last
    gc.collect()
    runs = []
    for _ in range(repeats):
        done, start = 0, time.process_time()
        while done < polls:
            now = tracker.next_wakeup()
            assert now is not None
            for action in tracker.due(now):
                assert isinstance(action, str)
                tracker.observed(action, snapshots[action], now)
                done += 1
        runs.append((time.process_time() - start) / done * 1e9)
    return statistics.median(runs)


# -- the watcher over a fast fake ---------------------------------------------------


_BACK_TO_BACK: dict[str, Any] = {
    "strategy": "per_id",
    "stop_when_done": False,
    "min_interval": 1e-6,
    "max_interval": 1e-6,
    "jitter": 0.0,
    "stagger": 0.0,
}
_MONITOR_PERIOD = 0.005  # seconds between looks at the poll counter


class _FakeBatches:
    """``retrieve`` as the client has it, minus the network: one checkpoint, then a decode."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self._bodies = bodies

    async def retrieve(self, batch_id: str, **_options: Any) -> Batch:
        await anyio.lowlevel.checkpoint()
        return batch_decoder.decode(self._bodies[batch_id])


class _FakeClient:
    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.batches = _FakeBatches(bodies)


async def _watch(bodies: dict[str, bytes], polls: int) -> tuple[float, float]:
    """Watch every batch: bytes per batch once all are seen, then CPU ns per poll.

    tracemalloc runs only until every batch is seen, so it never slows the timed polls.
    """
    client = cast("Client", _FakeClient(bodies))
    unseen = set(bodies)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with Watcher(client, bodies, **_BACK_TO_BACK) as watcher:
            async for event in watcher:
                unseen.discard(event.batch_id)
                if not unseen:
                    break
            gc.collect()
            held = (tracemalloc.get_traced_memory()[0] - before) / len(bodies)
            tracemalloc.stop()
            first, start = watcher.statistics().polls, time.process_time()
            # The fake answers the same snapshot forever, so no event comes: check
            # the counter every few milliseconds.
            while watcher.statistics().polls - first < polls:  # noqa: ASYNC110
                await anyio.sleep(_MONITOR_PERIOD)
            elapsed = time.process_time() - start
            return held, elapsed / (watcher.statistics().polls - first) * 1e9
    finally:
        tracemalloc.stop()


def _run_watcher(bodies: dict[str, bytes], polls: int) -> tuple[float, float]:
    return anyio.run(_watch, bodies, polls, backend="asyncio")


def measure(count: int, polls: int) -> Figures:
    """Every figure for ``count`` watched batches."""
    bodies = _bodies(_ids(count))
    watcher_bytes, watcher_ns = _run_watcher(bodies, polls)
    return Figures(
        batches=count,
        tracker_bytes=_measure_memory(lambda: _seen_tracker(bodies), count),
        tracker_ns=_tracker_ns_per_poll(bodies, polls),
        watcher_bytes=watcher_bytes,
        watcher_ns=watcher_ns,
    )


def report(figures: Sequence[Figures]) -> str:
    """The table, with each cost also relative to the smallest size and to log N."""
    base = figures[0]
    headers = ["batches", "tracker B/batch", "watcher B/batch", "tracker ns/poll"]
    headers += [
        "watcher ns/poll",
        "tracker vs smallest",
        "watcher vs smallest",
        "log N vs smallest",
    ]
    rows = [
        [
            str(f.batches),
            f"{f.tracker_bytes:.0f}",
            f"{f.watcher_bytes:.0f}",
            f"{f.tracker_ns:.0f}",
            f"{f.watcher_ns:.0f}",
            f"{f.tracker_ns / base.tracker_ns:.2f}x",
            f"{f.watcher_ns / base.watcher_ns:.2f}x",
            f"{math.log(f.batches) / math.log(base.batches):.2f}x",
        ]
        for f in figures
    ]
    return table("Memory per watched batch and CPU per poll, no network", headers, rows)


def main(argv: Sequence[str] | None = None) -> list[Figures]:
    """Parse the command line, measure every size, print the table; returns the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--polls", type=int, default=10_000, help="timed polls per size")
    args = parser.parse_args(argv)
    print(machine_line())
    print(f"timed polls per size: {args.polls}")
    figures = [measure(count, args.polls) for count in args.sizes]
    print(report(figures))
    return figures


if __name__ == "__main__":
    main()
