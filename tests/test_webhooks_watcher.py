"""Webhooks feeding a real Watcher on the simulator: a delivery makes it poll long before time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from asyncbatch import Client, Event, EventKind, Watcher
from asyncbatch.testing import Simulator
from asyncbatch.webhooks import WebhookServer, serve_webhooks, sign

pytestmark = pytest.mark.anyio

API_KEY = "sim-key-webhooks-SECRET"
SECRET = "whsec-watcher-test-SECRET"
NOW = 1_784_544_000
HOUR = 3600.0

# Polling as a safety net only: every batch is polled once an hour, exactly.
SAFETY_NET: dict[str, Any] = {
    "min_interval": HOUR,
    "max_interval": HOUR,
    "jitter": 0.0,
    "stagger": 0.0,
    "stop_when_done": False,
    "seed": 1,
}


def fixed_clock() -> float:
    """The Unix time the receiver checks signatures against (no wall clock in tests)."""
    return NOW


async def deliver(
    session: aiohttp.ClientSession, server: WebhookServer, type_: str, data: dict[str, Any]
) -> int:
    """POST a signed delivery of ``type_`` to the server; its HTTP status."""
    body = msgspec.json.encode(
        {"id": f"whe_{type_}_{anyio.current_time()}", "created_at": "2026-07-20T10:40:00Z",
         "type": type_, "data": data}
    )  # fmt: skip
    headers = {"TL-Signature": sign(body, SECRET, timestamp=NOW)}
    async with session.post(server.url, data=body, headers=headers) as response:
        return response.status


@asynccontextmanager
async def watched(
    sim: Simulator, batch_ids: list[str], **options: Any
) -> AsyncIterator[tuple[Watcher, WebhookServer, aiohttp.ClientSession]]:
    """A watcher on the simulator with a webhook endpoint beside it, and a session to post with."""
    async with (
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
        Watcher(client, batch_ids, **{**SAFETY_NET, **options}) as watcher,
        serve_webhooks(watcher, secret=SECRET, clock=fixed_clock) as server,
        aiohttp.ClientSession() as session,
    ):
        yield watcher, server, session


async def next_events(watcher: Watcher, count: int) -> list[Event]:
    """The watcher's next ``count`` events."""
    return [await anext(watcher) for _ in range(count)]


async def test_without_a_webhook_the_next_event_waits_for_the_poll_interval() -> None:
    """The control: with no delivery, a batch that finished is only noticed an hour later."""
    async with Simulator(api_key=API_KEY, seed=3) as sim:
        batch_id = sim.create_batch(4)["batch_id"]
        async with watched(sim, [batch_id]) as (watcher, _, _):
            (seen,) = await next_events(watcher, 1)
            seen_at = anyio.current_time()
            (done,) = await next_events(watcher, 1)
    assert (seen.kind, done.kind) == (EventKind.SEEN, EventKind.DONE)
    assert anyio.current_time() - seen_at >= HOUR


async def test_a_task_webhook_makes_the_watcher_poll_at_once() -> None:
    """An ``analyze.task.ready`` delivery brings the ``done`` event seconds after, not an hour."""
    async with Simulator(api_key=API_KEY, seed=3) as sim:
        batch_id = sim.create_batch(4)["batch_id"]
        async with watched(sim, [batch_id]) as (watcher, server, session):
            (seen,) = await next_events(watcher, 1)
            seen_at = anyio.current_time()
            await anyio.sleep(120)
            assert sim.batch(batch_id)["status"] == "completed"  # finished, not yet noticed
            task = {"id": "68f4ddaf8aaa60d33df0e900", "custom_id": "item-0", "status": "ready"}
            assert await deliver(session, server, "analyze.task.ready", task) == 200
            (done,) = await next_events(watcher, 1)
            noticed_after = anyio.current_time() - seen_at
    assert (seen.kind, done.kind) == (EventKind.SEEN, EventKind.DONE)
    assert done.batch is not None
    assert done.batch.status == "completed"
    assert 120 <= noticed_after < 125


async def test_a_batch_webhook_refreshes_only_the_batch_it_names() -> None:
    """A batch-level delivery polls that batch now; the other keeps its hourly schedule."""
    async with Simulator(api_key=API_KEY, seed=4) as sim:
        first, second = (sim.create_batch(2)["batch_id"] for _ in range(2))
        async with watched(sim, [first, second], strategy="per_id") as (watcher, server, session):
            await next_events(watcher, 2)  # both seen
            started = anyio.current_time()
            await anyio.sleep(120)
            assert (
                await deliver(session, server, "analyze.batch.completed", sim.batch(first)) == 200
            )
            (event,) = await next_events(watcher, 1)
            assert (event.batch_id, event.kind) == (first, EventKind.DONE)
            assert anyio.current_time() - started < 125
            with anyio.move_on_after(HOUR / 2):
                await next_events(watcher, 1)
                pytest.fail("the batch the webhook did not name was polled early")
            (later,) = await next_events(watcher, 1)
            assert (later.batch_id, later.kind) == (second, EventKind.DONE)
            assert anyio.current_time() - started >= HOUR
            assert watcher.statistics().polls == 4


async def test_in_sweep_mode_one_delivery_costs_one_list_request() -> None:
    """A task delivery while sweeping refreshes every watched batch with a single list sweep."""
    async with Simulator(api_key=API_KEY, seed=5, item_seconds=600, pending_seconds=1) as sim:
        batch_ids = [sim.create_batch(3)["batch_id"] for _ in range(3)]
        async with watched(sim, batch_ids, strategy="sweep") as (watcher, server, session):
            await next_events(watcher, 3)  # all seen, pending, by the first sweep
            await anyio.sleep(60)
            before = watcher.statistics()
            assert await deliver(session, server, "analyze.task.failed", {"id": "x"}) == 200
            events = await next_events(watcher, 3)
            after = watcher.statistics()
    assert {e.batch_id for e in events} == set(batch_ids)
    assert {e.kind for e in events} == {EventKind.STATUS}
    assert (after.sweeps - before.sweeps, after.polls - before.polls) == (1, 0)


async def test_deliveries_after_the_watcher_closed_are_still_acknowledged() -> None:
    """A receiver outliving its watcher answers 200; the closed watcher ignores the refresh."""
    async with (
        Simulator(api_key=API_KEY, seed=6) as sim,
        Client(api_key=API_KEY, base_url=sim.base_url) as client,
        aiohttp.ClientSession() as session,
    ):
        watcher = Watcher(client, [sim.create_batch(1)["batch_id"]], **SAFETY_NET)
        async with serve_webhooks(watcher, secret=SECRET, clock=fixed_clock) as server:
            async with watcher:
                await next_events(watcher, 1)
            assert await deliver(session, server, "analyze.task.ready", {"id": "x"}) == 200
            assert server.receiver.statistics().accepted == 1


async def test_serve_webhooks_stops_listening_and_leaves_no_task_behind() -> None:
    """After the block (ended or cancelled) the port refuses connections and no task lingers."""
    tasks_before = asyncio.all_tasks()
    # A new connection per request, so "refused" means nothing listens, not a stale keep-alive.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for cancel in (False, True):
            with anyio.CancelScope() as scope:
                async with serve_webhooks(None, secret=SECRET, clock=fixed_clock) as server:
                    assert server.url.startswith("http://127.0.0.1:")
                    assert await deliver(session, server, "ping", {}) == 200
                    if cancel:
                        scope.cancel()
                        await anyio.sleep(HOUR)
            assert scope.cancelled_caught == cancel
            with pytest.raises(aiohttp.ClientConnectorError):
                await deliver(session, server, "ping", {})
    assert asyncio.all_tasks() == tasks_before
