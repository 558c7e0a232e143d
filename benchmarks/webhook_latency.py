"""Event latency and requests per batch: webhooks beside a slow poll, against polling alone.

Run: ``.venv/bin/python -m benchmarks.webhook_latency`` (``--help`` for sizes).

Everything runs in this process on a `VirtualTimeLoop`: the simulator, its
webhook deliveries, a `WebhookReceiver` (`serve_webhooks`) and a `Watcher`,
talking real HTTP over loopback, with the loop's clock jumping over idle
waits. Latencies are therefore in *simulated* seconds and exclude real
network and server delays (loopback HTTP takes no virtual time); what they
measure is the schedule: how long after a batch's simulated finish its
``done`` reaches the consumer. The platform's own delay before it sends a
webhook is unknown and taken as zero.

Each mode watches the same batches (same seeds) to the end:

* polling only, with the watcher's default schedule (5 s to 60 s);
* polling only, tight (1 s to 5 s): what polling must spend to come close;
* webhooks with polling as the safety net (30 s to 600 s, as docs/webhooks.md advises),
  with the receiver's default 5 s coalescing window, then with a 30 s one;
* the same with webhook faults: a share of deliveries with bad signatures or stale
  timestamps (refused, then retried by the simulator) and of duplicates.

Requests per batch count every API request the simulator answered (the
batches are created directly, so creation is not counted); webhook POSTs per
batch count every delivery attempt, refused ones included.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from asyncbatch import Client, EventKind, Watcher
from asyncbatch.testing import Simulator, VirtualTimeLoop, WebhookFaults
from asyncbatch.webhooks import serve_webhooks

from ._report import machine_line, table

API_KEY = "bench-key-not-secret"
SECRET = "bench-webhook-secret"  # noqa: S105 - a made-up secret for a local benchmark


@dataclass(frozen=True)
class Mode:
    """One way of learning about changes."""

    name: str
    min_interval: float
    max_interval: float
    webhooks: bool = False
    faults: WebhookFaults | None = None
    coalesce: float = 5.0
    """The receiver's coalescing window (its default is 5 s)."""


@dataclass(frozen=True)
class Outcome:
    """One mode over every seed: done latencies (simulated seconds) and costs per batch."""

    mode: Mode
    latencies: list[float]
    requests_per_batch: float
    posts_per_batch: float


def modes(fault_rate: float) -> list[Mode]:
    """The modes compared, polling only first."""
    faults = WebhookFaults(
        bad_signature=fault_rate / 2, stale_timestamp=fault_rate / 2, duplicate=fault_rate
    )
    return [
        Mode("polling only, 5 s to 60 s (defaults)", 5.0, 60.0),
        Mode("polling only, 1 s to 5 s", 1.0, 5.0),
        Mode("webhooks + polling 30 s to 600 s", 30.0, 600.0, webhooks=True),
        Mode("webhooks, coalesce 30 s + polling 30 s to 600 s", 30.0, 600.0, True, coalesce=30.0),
        Mode(
            f"webhooks ({fault_rate:.0%} faults) + polling 30 s to 600 s",
            30.0,
            600.0,
            webhooks=True,
            faults=faults,
        ),
    ]


async def watch_once(
    mode: Mode, seed: int, item_seconds: float, args: argparse.Namespace
) -> tuple[list[float], int, int]:
    """One run: each batch's done latency, the API requests, and the webhook POSTs."""
    async with AsyncExitStack() as stack:
        sims: list[Simulator] = []
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "seed": seed,
            "item_seconds": item_seconds,
            "item_failure_rate": 0.05,
        }
        server = None
        if mode.webhooks:

            def sim_time() -> float:
                return sims[0].unix_now()  # the receiver checks stamps on the simulated timeline

            server = await stack.enter_async_context(
                serve_webhooks(None, secret=SECRET, clock=sim_time, coalesce=mode.coalesce)
            )
            options |= {
                "webhook_urls": [server.url],
                "webhook_secret": SECRET,
                "webhook_faults": mode.faults,
            }
        sims.append(await stack.enter_async_context(Simulator(**options)))
        sim = sims[0]
        batch_ids = [sim.create_batch(args.items)["batch_id"] for _ in range(args.batches)]
        client = await stack.enter_async_context(Client(api_key=API_KEY, base_url=sim.base_url))
        watcher = Watcher(
            client,
            batch_ids,
            min_interval=mode.min_interval,
            max_interval=mode.max_interval,
            seed=seed,
        )
        done_at: dict[str, float] = {}
        async with watcher:
            if server is not None:
                server.receiver.attach(watcher)
            async for event in watcher:
                if event.kind is EventKind.DONE:
                    done_at[event.batch_id] = anyio.current_time()
        latencies = [done_at[b] - _finished_at(sim, b) for b in batch_ids]
        return latencies, sim.stats.total_requests, len(sim.webhook_log)


def _finished_at(sim: Simulator, batch_id: str) -> float:
    batch = sim.batch(batch_id)
    stamp = batch.get("completed_at") or batch.get("canceled_at") or batch["expired_at"]
    return sim.clock_at(datetime.fromisoformat(stamp))


async def measure(item_seconds: float, args: argparse.Namespace) -> list[Outcome]:
    """Every mode over every seed, with items of ``item_seconds`` on average."""
    outcomes = []
    for mode in modes(args.fault_rate):
        latencies: list[float] = []
        requests = posts = 0
        for seed in range(args.seeds):
            run_latencies, run_requests, run_posts = await watch_once(
                mode, seed, item_seconds, args
            )
            latencies += run_latencies
            requests += run_requests
            posts += run_posts
        runs = args.seeds * args.batches
        outcomes.append(Outcome(mode, latencies, requests / runs, posts / runs))
    return outcomes


def report(outcomes: Sequence[Outcome], item_seconds: float, args: argparse.Namespace) -> str:
    """The table, with the setup above it."""
    rows = []
    for outcome in outcomes:
        lat = sorted(outcome.latencies)
        rows.append(
            [
                outcome.mode.name,
                f"{statistics.mean(lat):.2f}",
                f"{statistics.median(lat):.2f}",
                f"{lat[-1]:.2f}",
                f"{outcome.requests_per_batch:.1f}",
                f"{outcome.posts_per_batch:.1f}",
            ]
        )
    setup = (
        f"{args.seeds} runs x {args.batches} batches of {args.items} items "
        f"({item_seconds:g} s each on average, 4 at a time, 5 % fail)"
    )
    headers = [
        "mode",
        "done latency mean (s)",
        "p50 (s)",
        "max (s)",
        "API requests / batch",
        "webhook POSTs / batch",
    ]
    return table(f"simulated finish -> done at the consumer: {setup}", headers, rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batches", type=int, default=5, help="batches per run (default: 5)")
    parser.add_argument("--items", type=int, default=20, help="items per batch (default: 20)")
    parser.add_argument(
        "--item-seconds",
        type=float,
        nargs="+",
        default=[20.0, 600.0],
        help="mean item time; one table per value (default: 20 600)",
    )
    parser.add_argument("--seeds", type=int, default=5, help="runs per mode (default: 5)")
    parser.add_argument(
        "--fault-rate", type=float, default=0.2, help="webhook fault rate (default: 0.2)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Outcome]:
    """Measure, print the table, and return the outcomes."""
    args = parse_args(argv)
    print(machine_line())
    print("virtual time: latencies are simulated seconds; loopback HTTP costs none of them")
    outcomes = []
    # The fault mode's refusals are expected; the receiver would log each one as a warning.
    # The level is put back after, so that a caller's own logging (a test's) is unchanged.
    receiver_logger = logging.getLogger("asyncbatch.webhooks")
    level = receiver_logger.level
    receiver_logger.setLevel(logging.ERROR)
    try:
        for item_seconds in args.item_seconds:
            found = anyio.run(
                measure, item_seconds, args, backend_options={"loop_factory": VirtualTimeLoop}
            )
            print(report(found, item_seconds, args))
            outcomes += found
    finally:
        receiver_logger.setLevel(level)
    return outcomes


if __name__ == "__main__":
    main()
