"""A service loop: a producer adds batches to a long-running watcher while a consumer handles
its events, both in one task group, and a stop request ends them cleanly.

    python examples/service_loop.py

runs it against the simulator on virtual time (it ends in a moment). In a real service, pass
`run_service` an `asyncbatch.Client()` and your own source of batch IDs, and call `stop.set()`
from your shutdown path (here: SIGINT, SIGTERM, or the producer's last batch ending).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import anyio

import asyncbatch
from asyncbatch.testing import Simulator, VirtualTimeLoop


async def run_service(
    client: asyncbatch.Client, new_batch_ids: AsyncIterator[str], stop: anyio.Event
) -> int:
    """Watch every batch ``new_batch_ids`` yields until ``stop`` is set; returns events handled."""
    handled = 0
    async with client.watch(stop_when_done=False, min_interval=5.0) as watcher:

        async def produce() -> None:
            async for batch_id in new_batch_ids:
                watcher.add(batch_id)

        async def consume() -> None:
            nonlocal handled
            async for event in watcher:  # asking for the next event acknowledges this one
                handled += 1
                if event.is_final:
                    print(f"{event.batch_id} {event.kind}: {describe(event)}")

        async with anyio.create_task_group() as services:
            services.start_soon(produce)
            services.start_soon(consume)
            await stop.wait()
            services.cancel_scope.cancel()  # the clean stop: both tasks end, the watcher closes
    return handled


def describe(event: asyncbatch.Event) -> str:
    """How a batch ended, in a few words."""
    if event.batch is None:
        return type(event.error).__name__
    return f"{event.batch.status}, {event.batch.ready_items}/{event.batch.total_items} ready"


async def demo_batches(
    client: asyncbatch.Client, count: int, all_ended: anyio.Event
) -> AsyncIterator[str]:
    """Create ``count`` small batches a minute apart; sets ``all_ended`` when the last ends."""
    created = []
    for number in range(count):
        batch = await client.batches.create(
            [{"video": {"type": "asset_id", "asset_id": f"clip-{number}"}, "custom_id": "c-1"}],
            defaults={"prompt": {"input_text": "Summarise the video."}},
        )
        created.append(batch.batch_id)
        yield batch.batch_id
        await anyio.sleep(60)
    for batch_id in created:  # a real service never runs out; this demo stops once it has
        await client.batches.wait(batch_id)
    all_ended.set()


async def stop_on_signal(stop: anyio.Event) -> None:
    """Set ``stop`` at the first SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def main() -> None:
    stop = anyio.Event()
    async with (
        Simulator(api_key="demo-key", seed=1, item_seconds=30) as sim,
        asyncbatch.Client(api_key="demo-key", base_url=sim.base_url) as client,
        anyio.create_task_group() as signals,
    ):
        signals.start_soon(stop_on_signal, stop)
        handled = await run_service(client, demo_batches(client, 3, stop), stop)
        signals.cancel_scope.cancel()
    print(f"stopped cleanly after {handled} events")


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())
