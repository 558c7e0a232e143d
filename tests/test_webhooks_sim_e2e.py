"""End to end in virtual time: the simulator delivers webhooks to a receiver beside a watcher that
polls only once an hour, and the watcher still reports every end within moments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio
import pytest

from asyncbatch import Client, Event, EventKind, Watcher
from asyncbatch.testing import Simulator, WebhookFaults
from asyncbatch.webhooks import WebhookEvent, WebhookServer, serve_webhooks

pytestmark = pytest.mark.anyio

API_KEY = "sim-key-webhooks-e2e"
SECRET = "whsec-e2e-SECRET-value"
HOUR = 3600.0
SAFETY_NET: dict[str, Any] = {"min_interval": HOUR, "max_interval": HOUR, "seed": 1}


@asynccontextmanager
async def delivering(
    **options: Any,
) -> AsyncIterator[tuple[Simulator, WebhookServer, list[tuple[float, WebhookEvent]]]]:
    """A receiver, and a simulator on the loop's clock delivering to it; (time, event) received."""
    received: list[tuple[float, WebhookEvent]] = []
    sims: list[Simulator] = []  # made once the receiver's URL is known

    def sim_time() -> float:
        """The receiver checks timestamps against the simulator's timeline."""
        return sims[0].unix_now()

    async with serve_webhooks(
        None,
        secret=SECRET,
        clock=sim_time,
        on_event=lambda event: received.append((anyio.current_time(), event)),
    ) as server:
        options.setdefault("seed", 5)
        sims.append(
            Simulator(api_key=API_KEY, webhook_urls=[server.url], webhook_secret=SECRET, **options)
        )
        async with sims[0] as sim:
            yield sim, server, received


async def watch_all(sim: Simulator, server: WebhookServer, batch_ids: list[str]) -> list[Event]:
    """Every event of a safety-net watcher refreshed by the receiver, with the time it arrived."""
    events: list[Event] = []
    async with (
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
        Watcher(client, batch_ids, **SAFETY_NET) as watcher,
    ):
        server.receiver.attach(watcher)
        events = [event async for event in watcher]
        server.receiver.detach(watcher)
    return events


def finished_at(sim: Simulator, batch: dict[str, Any]) -> float:
    """The loop time at which the simulator says the batch reached its terminal status."""
    stamp = batch.get("completed_at") or batch.get("canceled_at") or batch["expired_at"]
    return sim.clock_at(datetime.fromisoformat(stamp))


async def test_deliveries_bring_done_within_moments_of_the_finish() -> None:
    """With hourly polling, each batch's done arrives within a second of its simulated finish."""
    async with delivering(item_seconds=30.0) as (sim, server, received):
        batch_ids = [sim.create_batch(n)["batch_id"] for n in (2, 5, 9)]
        done_times: dict[str, float] = {}
        async with (
            Client(api_key=API_KEY, base_url=sim.base_url) as client,
            Watcher(client, batch_ids, **SAFETY_NET) as watcher,
        ):
            server.receiver.attach(watcher)
            async for event in watcher:
                if event.kind is EventKind.DONE:
                    done_times[event.batch_id] = anyio.current_time()
        await sim.webhooks_settled()
        finals = {batch_id: sim.batch(batch_id) for batch_id in batch_ids}
    assert set(done_times) == set(batch_ids)
    for batch_id, final in finals.items():
        assert final["status"] == "completed"
        lag = done_times[batch_id] - finished_at(sim, final)
        assert 0 <= lag < 1.0, (batch_id, lag)
        assert final["webhooks"] == [{"url": server.url, "delivered": True, "attempts": 1}]
    assert anyio.current_time() < HOUR  # no batch waited for the hourly poll
    kinds = [event.type for _, event in received]
    assert kinds.count("analyze.task.ready") == 16
    assert kinds.count("analyze.batch.completed") == 3


async def test_a_cancel_moves_the_batch_notification_earlier() -> None:
    """The delivery task wakes on a cancel: analyze.batch.canceled comes when the batch ends, not
    when its items would have."""
    async with delivering(item_seconds=100.0, items_at_once=1) as (sim, _, received):
        batch_id = sim.create_batch(10)["batch_id"]
        await anyio.sleep(60)
        sim.cancel_batch(batch_id)
        await anyio.sleep(HOUR)
        final = sim.batch(batch_id)
    batch_events = [(at, e) for at, e in received if e.type.startswith("analyze.batch.")]
    assert [e.type for _, e in batch_events] == ["analyze.batch.canceled"]
    assert batch_events[0][0] == pytest.approx(finished_at(sim, final), abs=0.5)
    assert final["canceled_items"] == 9


async def test_under_webhook_faults_every_batch_still_ends_exactly_once() -> None:
    """Bad signatures are refused, duplicates acknowledged as such, and the watcher still ends each
    batch with one done, in time."""
    faults = WebhookFaults(bad_signature=0.2, stale_timestamp=0.2, duplicate=0.3)
    async with delivering(
        seed=11, item_seconds=20.0, item_failure_rate=0.2, webhook_faults=faults
    ) as (sim, server, received):
        batch_ids = [sim.create_batch(n)["batch_id"] for n in (3, 6, 8, 12)]
        events = await watch_all(sim, server, batch_ids)
        await sim.webhooks_settled()
        stats = server.receiver.statistics()
        log = sim.webhook_log
        finals = {batch_id: sim.batch(batch_id) for batch_id in batch_ids}
    final_events = [e for e in events if e.is_final]
    assert sorted(e.batch_id for e in final_events) == sorted(batch_ids)
    assert {e.kind for e in final_events} == {EventKind.DONE}
    assert anyio.current_time() < HOUR
    refused = [a for a in log if a.fault in ("bad_signature", "stale_timestamp")]
    assert refused
    assert {a.status for a in refused} == {401}
    assert stats.rejected == len(refused)
    duplicates = [a for a in log if a.fault == "duplicate"]
    assert duplicates
    assert stats.duplicates == len(duplicates)
    assert stats.accepted == len({e.id for _, e in received}) == len(received)
    for final in finals.values():
        (record,) = final["webhooks"]
        assert record["attempts"] >= 1
        assert record["delivered"] == ("last_error" not in record)


async def test_leaving_the_block_stops_the_delivery_task() -> None:
    """After the simulator's block ends, no delivery is attempted however much time passes."""
    async with delivering(item_seconds=600.0) as (sim, _, received):
        sim.create_batch(3)
    await anyio.sleep(HOUR)
    assert received == []
    assert sim.webhook_log == []


async def test_aclose_inside_the_block_stops_deliveries_without_an_error() -> None:
    """Closing the simulator early (aclose) ends the delivery task quietly; the block exits."""
    async with delivering(item_seconds=10.0) as (sim, _, received):
        sim.create_batch(2)
        await sim.aclose()
        await anyio.sleep(HOUR)
    assert received == []
