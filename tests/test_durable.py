"""Acknowledged delivery and resuming from a state store, on the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asyncbatch import Client, Event, EventKind, MemoryStore, StoredBatch
from asyncbatch.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "sim-key"
FAST: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "seed": 1}


@asynccontextmanager
async def running() -> AsyncIterator[tuple[Simulator, Client]]:
    async with (
        Simulator(api_key=KEY, seed=4, item_seconds=30.0, items_at_once=1) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        yield sim, client


async def take(client: Client, store: MemoryStore, count: int) -> list[Event]:
    """Read ``count`` events from a resumed watcher, then stop as a crash would."""
    events: list[Event] = []
    async with client.watch(state=store, resume=True, **FAST) as watcher:
        async for event in watcher:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_unacknowledged_event_comes_again() -> None:
    """An event read but not acknowledged (no next request) is delivered again after a restart."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(3)["batch_id"]
        store = MemoryStore()
        await store.track([batch_id])
        (first,) = await take(client, store, 1)
        (again,) = await take(client, store, 1)
        assert first.kind is again.kind is EventKind.SEEN
        assert (await store.load()) == [StoredBatch(batch_id=batch_id)]


async def test_change_while_down_is_reported_against_the_acknowledged_snapshot() -> None:
    """A completion while no watcher ran arrives as `done` after the acknowledged snapshot."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(3)["batch_id"]
        store = MemoryStore()
        await store.track([batch_id])
        seen, _ = await take(client, store, 2)  # `seen` acknowledged by asking for the second
        await anyio.sleep(3600)  # the batch completes while nothing watches
        (done,) = await take(client, store, 1)
        assert done.kind is EventKind.DONE
        assert done.previous == seen.batch
        assert done.batch is not None
        assert done.batch.status == "completed"


async def test_acknowledged_final_event_never_comes_again() -> None:
    """Once `done` is acknowledged, resuming watches nothing and ends at once."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(2)["batch_id"]
        store = MemoryStore()
        async with client.watch([batch_id], state=store, **FAST) as watcher:
            events = [event async for event in watcher]  # the last ask acknowledges `done`
        assert events[-1].kind is EventKind.DONE
        (record,) = await store.load()
        assert record.final
        started = anyio.current_time()
        assert await take(client, store, 1) == []
        async with client.watch([batch_id], state=store, **FAST) as watcher:
            assert [event async for event in watcher] == []
        assert anyio.current_time() - started < 1.0


async def test_explicit_acknowledgement() -> None:
    """With auto_ack off only what the consumer acks is kept; the rest comes again."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(3)["batch_id"]
        store = MemoryStore()
        await store.track([batch_id])
        async with client.watch(state=store, resume=True, auto_ack=False, **FAST) as watcher:
            kept = None
            async for event in watcher:
                if kept is None:
                    kept = event
                    await watcher.ack(event)
                if event.is_final:
                    break
        assert kept is not None
        (record,) = await store.load()
        assert record.snapshot == kept.batch
        (again,) = await take(client, store, 1)
        assert again.previous == kept.batch


async def test_acknowledgements_never_go_backwards() -> None:
    """Acking an older event after a newer one leaves the newer record."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(3)["batch_id"]
        store = MemoryStore()
        async with client.watch([batch_id], state=store, auto_ack=False, **FAST) as watcher:
            events = [event async for event in watcher]
            for event in reversed(events):
                await watcher.ack(event)
        (record,) = await store.load()
        assert record.final
        assert record.snapshot == events[-1].batch


async def test_watch_active_adds_the_accounts_active_batches() -> None:
    """watch_active=True follows every active batch of the account without naming it."""
    async with running() as (sim, client):
        ids = {sim.create_batch(1)["batch_id"] for _ in range(3)}
        async with client.watch(watch_active=True, **FAST) as watcher:
            finals = {event.batch_id async for event in watcher if event.is_final}
        assert finals == ids
