"""Event latency: from a state change in the simulator to the event in the consumer's hands.

Run: ``.venv/bin/python -m benchmarks.latency`` (``--help`` for sizes).

The simulator runs in this process on a `VirtualTimeLoop` (simulated time,
seeded randomness). Four batches sit ``pending`` (their items never start);
at random moments a driver cancels one of them, which turns it ``canceling``
at that instant, and replaces it with a fresh batch that the watcher is told
to watch. The latency of a sample is the simulated time from the cancel to
the consumer receiving that batch's next event, against the watcher's poll
interval.

Rows: the default schedule (5 s, backing off x1.5 to 60 s while nothing
changes) per ID and by list sweep; a fixed 5 s interval (no back-off); and the
default schedule with ``watcher.refresh(batch_id)`` called at the change, as a
webhook receiver does.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from asyncbatch import Client, Watcher
from asyncbatch.testing import Simulator, SimulatorError, VirtualTimeLoop

from ._report import machine_line, table

API_KEY = "bench-key-not-secret"
LIVE_BATCHES = 4  # one below the API's 5 active, so a replacement can start at once
NEVER = 1e9  # seconds: items never start, so nothing but the cancel changes a batch


@dataclass(frozen=True)
class Setup:
    """One row: watcher options, and whether the change also triggers a refresh."""

    name: str
    options: dict[str, Any]
    refresh: bool = False


SETUPS = (
    Setup("per_id, 5-60 s back-off", {"strategy": "per_id"}),
    Setup("sweep, 5-60 s back-off", {"strategy": "sweep"}),
    Setup("per_id, fixed 5 s", {"strategy": "per_id", "max_interval": 5.0}),
    Setup("per_id, 5-60 s + refresh()", {"strategy": "per_id"}, refresh=True),
)


@dataclass
class Samples:
    """Latencies of one setup, and what it cost in requests over simulated time."""

    setup: Setup
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0


async def _replace(sim: Simulator) -> str:
    """A fresh pending batch; waits out the moment the canceled one still holds its slot."""
    while True:
        try:
            return str(sim.create_batch(2)["batch_id"])
        except SimulatorError:
            await anyio.sleep(0.5)


@dataclass
class _Run:
    """What the driver and the consumer share."""

    sim: Simulator
    watcher: Watcher
    setup: Setup
    live: list[str]
    cancels: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    sampled: anyio.Event = field(default_factory=anyio.Event)

    def observe(self, batch_id: str) -> None:
        """A batch's event arrived: the first one after its cancel is a sample."""
        changed_at = self.cancels.pop(batch_id, None)
        if changed_at is not None:
            self.latencies.append(anyio.current_time() - changed_at)
            self.sampled.set()


async def _drive(run: _Run, count: int, rng: random.Random) -> None:
    """Cancel a random live batch at random moments, ``count`` times, replacing each.

    The replacement joins only once the cancel has been seen: adding a batch
    makes the watcher look soon (a sweep, in sweep mode), which would otherwise
    pick up the cancel early and flatter the figures.
    """
    for _ in range(count):
        await anyio.sleep(rng.uniform(5.0, 125.0))
        victim = run.live.pop(rng.randrange(len(run.live)))
        run.sampled = anyio.Event()
        run.sim.cancel_batch(victim)
        run.cancels[victim] = anyio.current_time()
        if run.setup.refresh:
            run.watcher.refresh(victim)
        await run.sampled.wait()
        fresh = await _replace(run.sim)
        run.live.append(fresh)
        run.watcher.add(fresh)


async def _measure(setup: Setup, count: int, seed: int) -> Samples:
    samples = Samples(setup)
    rng = random.Random(seed)
    async with (
        Simulator(api_key=API_KEY, seed=seed, pending_seconds=NEVER) as sim,
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
    ):
        live = [str(sim.create_batch(2)["batch_id"]) for _ in range(LIVE_BATCHES)]
        start = anyio.current_time()
        async with (
            client.watch(live, stop_when_done=False, seed=seed, **setup.options) as watcher,
            anyio.create_task_group() as group,
        ):
            run = _Run(sim, watcher, setup, live)
            group.start_soon(_drive, run, count, rng)
            async for event in watcher:
                # The first event after the cancel shows the change, whether it
                # caught ``canceling`` or already ``canceled``.
                run.observe(event.batch_id)
                if len(run.latencies) == count:
                    break
            group.cancel_scope.cancel()
        samples.latencies = run.latencies
        samples.seconds = anyio.current_time() - start
        samples.requests = sim.stats.total_requests
    return samples


def _row(samples: Samples) -> list[str]:
    lat = sorted(samples.latencies)
    p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
    per_minute = samples.requests / samples.seconds * 60 / LIVE_BATCHES
    return [
        samples.setup.name,
        str(len(lat)),
        f"{statistics.median(lat):.1f}",
        f"{statistics.fmean(lat):.1f}",
        f"{p90:.1f}",
        f"{lat[-1]:.1f}",
        f"{per_minute:.2f}",
    ]


async def run(count: int, seed: int) -> list[Samples]:
    """Every setup, each on its own simulator with the same seed."""
    return [await _measure(setup, count, seed) for setup in SETUPS]


def main(argv: Sequence[str] | None = None) -> list[Samples]:
    """Parse the command line, run every setup, print the table; returns the samples."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--samples", type=int, default=200, help="changes per setup (200)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(machine_line())
    print(f"{args.samples} changes per setup, seed {args.seed}, {LIVE_BATCHES} watched batches")
    results = anyio.run(
        run,
        args.samples,
        args.seed,
        backend="asyncio",
        backend_options={"loop_factory": VirtualTimeLoop},
    )
    headers = ["setup", "samples", "median s", "mean s", "p90 s", "max s"]
    headers.append("requests/batch/min")
    title = "Latency from a status change to its event (simulated seconds)"
    print(table(title, headers, [_row(s) for s in results]))
    return results


if __name__ == "__main__":
    main()
