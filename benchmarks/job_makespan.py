"""Job makespan: a job's wall time (simulated) against the ideal and against naive chunks.

Run: ``.venv/bin/python -m benchmarks.job_makespan`` (``--help`` for sizes).

The simulator runs in this process on a `VirtualTimeLoop` with its defaults: five active
batches per account, each batch running its items four at a time, an item taking 20 s on
average (0.5x to 1.5x, seeded). The ideal is every slot busy all the time: requests x 20 s
/ (5 slots x 4 items). Two contenders per size:

* ``job``: ``client.jobs.run`` (batches sized by `next_batch_size`);
* ``naive``: chunks of 1,000 in input order, each created as soon as a slot frees (a watcher
  reports the end of each), which is what a hand-written loop does.

Both watch with the same poll policy (10 s to 60 s), so the time to notice a batch's end is
the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import anyio

from asyncbatch import Client, PollPolicy
from asyncbatch.testing import Simulator, VirtualTimeLoop

from ._report import machine_line, table

API_KEY = "bench-key-not-secret"
SLOTS = 5
LANES = 4
ITEM_SECONDS = 20.0
POLL = PollPolicy(min_interval=10.0, max_interval=60.0)
PROMPT = {"prompt": {"input_text": "Describe the video."}}


def ideal(count: int) -> float:
    return count * ITEM_SECONDS / (SLOTS * LANES)


def requests(count: int) -> list[dict[str, Any]]:
    return [{"video": {"asset_id": f"asset-{i}"}, "custom_id": f"r{i}"} for i in range(count)]


async def job_makespan(count: int, seed: int) -> tuple[float, int]:
    """Simulated seconds for ``client.jobs.run`` to deliver every outcome, and batches made."""
    async with (
        Simulator(api_key=API_KEY, seed=seed) as sim,
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
    ):
        started = anyio.current_time()
        async with client.jobs.run(requests(count), defaults=PROMPT, poll=POLL) as job:
            delivered = sum([1 async for _ in job])
        assert delivered == count
        return anyio.current_time() - started, len(sim.batch_ids())


async def naive_makespan(count: int, seed: int) -> tuple[float, int]:
    """Simulated seconds for 1,000-request chunks, one per free slot, to all end."""
    async with (
        Simulator(api_key=API_KEY, seed=seed) as sim,
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
    ):
        started = anyio.current_time()
        all_requests = requests(count)
        chunks = [all_requests[i : i + 1000] for i in range(0, count, 1000)]
        async with client.watch(stop_when_done=False, poll=POLL) as watcher:
            active = 0
            while chunks and active < SLOTS:
                created = await client.batches.create(chunks.pop(0), defaults=PROMPT)
                watcher.add(created.batch_id)
                active += 1
            async for event in watcher:
                if not event.is_final:
                    continue
                active -= 1
                if chunks:
                    created = await client.batches.create(chunks.pop(0), defaults=PROMPT)
                    watcher.add(created.batch_id)
                    active += 1
                elif not active:
                    break
        return anyio.current_time() - started, len(sim.batch_ids())


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1000, 2500, 5000, 6000, 7500, 10000, 12000, 16000, 20000],
        help="comma-separated request counts",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results = []
    for count in args.sizes:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            job_seconds, job_batches = runner.run(job_makespan(count, args.seed))
            naive_seconds, naive_batches = runner.run(naive_makespan(count, args.seed))
        results.append(
            {
                "requests": count,
                "ideal": ideal(count),
                "job": job_seconds,
                "job_batches": job_batches,
                "naive": naive_seconds,
                "naive_batches": naive_batches,
            }
        )
    print(machine_line())
    print(
        table(
            "Makespan (simulated seconds; ratio to the ideal of all five slots busy)",
            ["requests", "ideal s", "job s", "job x", "batches", "naive s", "naive x", "batches"],
            [
                [
                    str(r["requests"]),
                    f"{r['ideal']:.0f}",
                    f"{r['job']:.0f}",
                    f"{r['job'] / r['ideal']:.3f}",
                    str(r["job_batches"]),
                    f"{r['naive']:.0f}",
                    f"{r['naive'] / r['ideal']:.3f}",
                    str(r["naive_batches"]),
                ]
                for r in results
            ],
        )
    )
    return results


if __name__ == "__main__":
    main()
