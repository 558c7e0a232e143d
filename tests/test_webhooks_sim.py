"""The simulator's webhook deliveries, stepped by hand with a ManualClock (no background task)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from asyncbatch import Client
from asyncbatch.testing import ManualClock, Simulator, WebhookFaults
from asyncbatch.webhooks import WebhookEvent, WebhookServer, serve_webhooks

pytestmark = pytest.mark.anyio

API_KEY = "sim-key-webhook-deliveries"
SECRET = "whsec-simulator-SECRET-value"


def closed_port_url() -> str:
    """A loopback URL on which nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@asynccontextmanager
async def stepped(
    clock: ManualClock, urls: list[str] | None = None, **options: Any
) -> AsyncIterator[tuple[Simulator, WebhookServer, list[WebhookEvent]]]:
    """A ManualClock simulator delivering to a receiver (plus ``urls``); the events it accepted."""
    events: list[WebhookEvent] = []
    sims: list[Simulator] = []  # made once the receiver's URL is known

    def sim_time() -> float:
        """The receiver checks timestamps against the simulator's timeline."""
        return sims[0].unix_now()

    async with serve_webhooks(
        None, secret=SECRET, clock=sim_time, on_event=events.append
    ) as server:
        sims.append(
            Simulator(
                api_key=API_KEY,
                seed=2,
                clock=clock,
                item_seconds=10.0,
                webhook_urls=[server.url, *(urls or [])],
                webhook_secret=SECRET,
                **options,
            )
        )
        async with sims[0] as sim:
            yield sim, server, events


async def test_items_and_the_batch_end_are_delivered_signed_with_the_documented_fields() -> None:
    """Each finished item sends analyze.task.ready with id, custom_id, status and batch_id; the
    batch end sends analyze.batch.completed whose data is the batch object."""
    clock = ManualClock()
    async with stepped(clock) as (sim, _, events):
        created = sim.create_batch(3)
        assert await sim.deliver_due_webhooks() == 0  # nothing has finished yet
        clock.advance(600)
        assert await sim.deliver_due_webhooks() == 4
        final = sim.batch(created["batch_id"])
    tasks = {item["task_id"]: item["custom_id"] for item in created["items"]}
    task_events = [e for e in events if e.type == "analyze.task.ready"]
    assert {e.data["id"]: e.data["custom_id"] for e in task_events} == tasks
    assert {e.data["status"] for e in task_events} == {"ready"}
    assert {e.data["batch_id"] for e in task_events} == {created["batch_id"]}
    assert events[-1].type == "analyze.batch.completed"
    assert events[-1].batch_id == created["batch_id"]
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["ready_items"] == 3
    assert len({e.id for e in events}) == 4
    assert all(e.id.startswith("whe_") for e in events)
    assert final["webhooks"][0]["delivered"] is True
    assert final["webhooks"][0]["attempts"] == 1
    assert "last_error" not in final["webhooks"][0]


async def test_each_item_is_delivered_once_as_it_ends() -> None:
    """Items finishing at different times are delivered at the step after their end, never twice."""
    clock = ManualClock()
    async with stepped(clock, items_at_once=1) as (sim, _, events):
        sim.create_batch(3)
        sent = []
        for _ in range(12):
            clock.advance(5)
            sent.append(await sim.deliver_due_webhooks())
    assert sum(sent) == 4
    assert max(sent) <= 2  # the last item and the batch end together, the others alone
    assert len({e.id for e in events}) == 4


async def test_the_batch_record_appears_only_once_its_notification_was_sent() -> None:
    """``webhooks[]`` is absent until the batch notification is sent, then decodes on the client."""
    clock = ManualClock()
    async with stepped(clock) as (sim, _, _):
        batch_id = sim.create_batch(2)["batch_id"]
        clock.advance(600)
        assert sim.batch(batch_id)["status"] == "completed"
        assert "webhooks" not in sim.batch(batch_id)
        await sim.deliver_due_webhooks()
        async with Client(api_key=API_KEY, base_url=sim.base_url) as client:
            batch = await client.batches.retrieve(batch_id)
    assert batch.webhooks is not None
    assert [(w.delivered, w.attempts, w.last_error) for w in batch.webhooks] == [(True, 1, None)]


async def test_an_unreachable_url_is_retried_with_backoff_then_given_up() -> None:
    """Connection refused: tried at 0, +2 s and +6 s, then delivered false with last_error."""
    clock = ManualClock()
    dead = closed_port_url()
    async with stepped(clock, [dead]) as (sim, server, _):
        batch_id = sim.create_batch(1)["batch_id"]
        clock.advance(600)
        await sim.deliver_due_webhooks()
        records = {w["url"]: w for w in sim.batch(batch_id)["webhooks"]}
        assert records[dead]["attempts"] == 1
        assert records[dead]["delivered"] is False
        clock.advance(1.9)
        assert await sim.deliver_due_webhooks() == 0  # the backoff has not passed
        clock.advance(0.1)
        assert await sim.deliver_due_webhooks() == 2  # the task and the batch event, again
        clock.advance(4)
        assert await sim.deliver_due_webhooks() == 2
        clock.advance(3600)
        assert await sim.deliver_due_webhooks() == 0  # given up after three attempts
        records = {w["url"]: w for w in sim.batch(batch_id)["webhooks"]}
        log = sim.webhook_log
    assert records[dead]["attempts"] == 3
    assert records[dead]["delivered"] is False
    assert records[dead]["last_error"].startswith("connection failed")
    assert records[server.url] == {"url": server.url, "delivered": True, "attempts": 1}
    assert [a.attempt for a in log if a.url == dead and a.type.startswith("analyze.batch")] == [
        1,
        2,
        3,
    ]
    assert all(a.status is None and a.error for a in log if a.url == dead)


async def test_failed_items_send_task_failed_and_a_canceled_batch_skips_canceled_items() -> None:
    """A failed item sends analyze.task.failed; items canceled while queued send nothing, and the
    batch end is analyze.batch.canceled."""
    clock = ManualClock()
    async with stepped(clock, item_failure_rate=1.0, items_at_once=1) as (sim, _, events):
        batch_id = sim.create_batch(4)["batch_id"]
        clock.advance(5)  # the first item is running (starts by 3 s, takes 5 s or more)
        sim.cancel_batch(batch_id)
        clock.advance(600)
        await sim.deliver_due_webhooks()
        final = sim.batch(batch_id)
    assert [e.type for e in events] == ["analyze.task.failed", "analyze.batch.canceled"]
    assert events[0].data["status"] == "failed"
    assert events[1].data["canceled_items"] == 3
    assert final["webhooks"][0]["delivered"] is True


async def test_bad_signatures_and_stale_timestamps_are_refused_and_retried() -> None:
    """Signature faults get 401 from a verifying receiver; the record shows the failed attempts."""
    clock = ManualClock()
    faults = WebhookFaults(bad_signature=0.5, stale_timestamp=0.5)
    async with stepped(clock, webhook_faults=faults) as (sim, server, events):
        batch_id = sim.create_batch(1)["batch_id"]
        clock.advance(600)
        for _ in range(3):
            await sim.deliver_due_webhooks()
            clock.advance(10)
        record = sim.batch(batch_id)["webhooks"][0]
        log = sim.webhook_log
        stats = server.receiver.statistics()
    assert events == []
    assert {a.fault for a in log} == {"bad_signature", "stale_timestamp"}
    assert {a.status for a in log} == {401}
    assert stats.rejected == len(log) == 6
    assert record == {
        "url": server.url,
        "delivered": False,
        "attempts": 3,
        "last_error": "HTTP 401",
    }


async def test_duplicates_are_resent_with_the_same_id_and_answered_as_duplicates() -> None:
    """The duplicate fault sends a delivered event again; the receiver acknowledges it, once."""
    clock = ManualClock()
    async with stepped(clock, webhook_faults=WebhookFaults(duplicate=1.0)) as (sim, server, _):
        sim.create_batch(2)
        clock.advance(600)
        assert await sim.deliver_due_webhooks() == 6
        log = sim.webhook_log
        stats = server.receiver.statistics()
    assert (stats.accepted, stats.duplicates) == (3, 3)
    firsts = [a.event_id for a in log if a.fault is None]
    resends = [a.event_id for a in log if a.fault == "duplicate"]
    assert firsts == resends
    assert all(a.status == 200 for a in log)


async def test_deliveries_verify_with_the_secret_and_fault_draws_are_seeded() -> None:
    """A delivery's body and header verify with the secret; the same seed draws the same faults."""
    bodies: list[tuple[str | None, ...]] = []
    for _ in range(2):
        clock = ManualClock()
        faults = WebhookFaults(bad_signature=0.3, stale_timestamp=0.3, duplicate=0.3)
        async with stepped(clock, webhook_faults=faults, items_at_once=8) as (sim, _, _):
            sim.create_batch(8)
            clock.advance(600)
            await sim.deliver_due_webhooks()
            bodies.append(tuple(a.fault for a in sim.webhook_log))
    assert bodies[0] == bodies[1]
    assert len(set(bodies[0])) > 1


def test_the_options_are_checked_and_the_secret_stays_out_of_reprs() -> None:
    """URLs need a secret and an http(s) scheme; fault rates are 0 to 1; reprs hide the secret."""
    with pytest.raises(ValueError, match="webhook_secret"):
        Simulator(api_key=API_KEY, webhook_urls=["http://127.0.0.1:1/hook"])
    with pytest.raises(ValueError, match="http or https"):
        Simulator(api_key=API_KEY, webhook_urls=["ftp://x/hook"], webhook_secret=SECRET)
    with pytest.raises(ValueError, match="0 to 1"):
        WebhookFaults(duplicate=1.5)
    sim = Simulator(api_key=API_KEY, webhook_urls=["http://127.0.0.1:1/h"], webhook_secret=SECRET)
    assert SECRET not in repr(sim)


async def test_without_a_running_simulator_or_urls_delivery_is_refused() -> None:
    """deliver_due_webhooks needs URLs and a started simulator; webhooks_settled needs the task."""
    with pytest.raises(RuntimeError, match="no webhook_urls"):
        await Simulator(api_key=API_KEY).deliver_due_webhooks()
    sim = Simulator(api_key=API_KEY, webhook_urls=["http://127.0.0.1:1/h"], webhook_secret=SECRET)
    with pytest.raises(RuntimeError, match="while the simulator runs"):
        await sim.deliver_due_webhooks()
    async with Simulator(
        api_key=API_KEY, clock=ManualClock(), webhook_urls=["http://127.0.0.1:1/h"],
        webhook_secret=SECRET,
    ) as manual:  # fmt: skip
        with pytest.raises(RuntimeError, match="no delivery task"):
            await manual.webhooks_settled()
