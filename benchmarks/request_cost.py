"""Requests per tick and per observed transition: per-ID polling against the list sweep.

Run: ``.venv/bin/python -m benchmarks.request_cost`` (``--help`` for sizes).

The simulator (`asyncbatch.testing.Simulator`) runs in this process on a
`VirtualTimeLoop`, so a simulated hour costs only the CPU of its requests. It
holds ``--finished`` completed batches and ``--active`` running ones (the API
allows at most 5 active). One watcher per strategy watches all of them with
the default poll schedule until every batch has ended, and we count the
requests the simulator answered, in two phases:

* first look: until every batch has had its first event (a finished batch's
  first event is its ``done``);
* follow: the rest, until the last active batch ends. A *tick* is one
  ``min_interval`` of simulated time; a *transition* is an event after a
  batch's first (``status``, ``progress`` or ``done``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from asyncbatch import Client
from asyncbatch.testing import Simulator, VirtualTimeLoop

from ._report import machine_line, table

API_KEY = "bench-key-not-secret"
STRATEGIES = ("per_id", "sweep", "auto")
MIN_INTERVAL = 5.0  # the watcher's default, spelt out because ticks are counted in it
AGE_PAST_COMPLETION = 3600.0  # seconds: far more than a 3-item batch needs to finish


@dataclass(frozen=True)
class Phase:
    """Requests by endpoint over a stretch of simulated time, and the events it brought."""

    requests: Counter[str]
    seconds: float
    events: int

    @property
    def total(self) -> int:
        """Requests to every endpoint together."""
        return sum(self.requests.values())


@dataclass(frozen=True)
class Outcome:
    """One strategy's run: its two phases and the events by kind."""

    strategy: str
    first_look: Phase
    follow: Phase
    kinds: Counter[str]


def _populate(sim: Simulator, finished: int, active: int, items: int) -> list[str]:
    """Make ``finished`` completed batches and ``active`` running ones; returns every ID."""
    ids = []
    for _ in range(finished):
        batch_id = sim.create_batch(3)["batch_id"]
        sim.age_batch(batch_id, AGE_PAST_COMPLETION)
        ids.append(batch_id)
    ids += [sim.create_batch(items)["batch_id"] for _ in range(active)]
    return ids


async def _watch(strategy: str, finished: int, active: int, items: int, seed: int) -> Outcome:
    async with (
        Simulator(api_key=API_KEY, seed=seed) as sim,
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
    ):
        ids = _populate(sim, finished, active, items)
        start = anyio.current_time()
        unseen, kinds = set(ids), Counter[str]()
        first_look: Phase | None = None
        async with client.watch(
            ids, strategy=strategy, min_interval=MIN_INTERVAL, seed=seed
        ) as watcher:
            async for event in watcher:
                kinds[event.kind] += 1
                unseen.discard(event.batch_id)
                if first_look is None and not unseen:
                    seen_at = anyio.current_time()
                    first_look = Phase(Counter(sim.stats.requests), seen_at - start, len(ids))
        assert first_look is not None, "the watcher ended before every batch was seen"
        total = Counter(sim.stats.requests)
        follow = Phase(
            total - first_look.requests,
            anyio.current_time() - start - first_look.seconds,
            sum(kinds.values()) - len(ids),
        )
    return Outcome(strategy, first_look, follow, kinds)


def _row(outcome: Outcome) -> list[str]:
    first, follow = outcome.first_look, outcome.follow
    ticks = follow.seconds / MIN_INTERVAL
    return [
        outcome.strategy,
        str(first.total),
        f"{first.requests['retrieve']}/{first.requests['list']}",
        str(follow.total),
        f"{follow.requests['retrieve']}/{follow.requests['list']}",
        f"{follow.seconds:.0f}",
        f"{ticks:.0f}",
        f"{follow.total / ticks:.2f}" if ticks else "n/a",
        str(follow.events),
        f"{follow.total / follow.events:.2f}" if follow.events else "n/a",
    ]


async def run(finished: int, active: int, items: int, seed: int) -> list[Outcome]:
    """One watcher run per strategy, on identical simulators."""
    return [await _watch(s, finished, active, items, seed) for s in STRATEGIES]


def main(argv: Sequence[str] | None = None) -> list[Outcome]:
    """Parse the command line, run every strategy, print the table; returns the outcomes."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cost", description=__doc__)
    parser.add_argument("--finished", type=int, default=200, help="completed batches (200)")
    parser.add_argument("--active", type=int, default=5, help="running batches (5, the API max)")
    parser.add_argument("--items", type=int, default=40, help="items per running batch (40)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(machine_line())
    print(
        f"{args.finished} finished + {args.active} active batches of {args.items} items, "
        f"seed {args.seed}, tick = min_interval = {MIN_INTERVAL:g} s (simulated)"
    )
    outcomes = anyio.run(
        run,
        args.finished,
        args.active,
        args.items,
        args.seed,
        backend="asyncio",
        backend_options={"loop_factory": VirtualTimeLoop},
    )
    headers = [
        "strategy",
        "first look: requests",
        "GET/list",
        "follow: requests",
        "GET/list",
        "follow: sim s",
        "ticks",
        "requests/tick",
        "transitions",
        "requests/transition",
    ]
    title = "Requests per tick and per transition (simulator, virtual time)"
    print(table(title, headers, [_row(o) for o in outcomes]))
    return outcomes


if __name__ == "__main__":
    main()
