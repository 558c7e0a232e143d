"""Cancellation at random points leaves nothing behind, and leaving is prompt even mid-pause.

Cancelled here: the watcher (its ``async with`` left, or cancelled from
outside, while requests are in flight), single calls (retrieve, list,
results, cancel, create) part-way, and waits for a 429's Retry-After or a
retry's backoff. Left behind would be: a task, a connection the server still
sees open once the client is closed, a file descriptor, or an unclosed
session or response (ResourceWarning, an error under the suite's filters).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asyncbatch import AsyncBatchError, Client, RetryPolicy
from asyncbatch.testing import FaultRule, Simulator

pytestmark = pytest.mark.anyio

KEY = "cancel-test-key"
FAST: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "seed": 3}
# Latency on a third of the requests, so that many cancellations land mid-request.
SLOW = [FaultRule(rate=0.3, kinds=["latency"], latency=4.0), FaultRule(rate=0.2)]


def _client_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks other than the simulator's request handlers."""
    return {
        task
        for task in asyncio.all_tasks()
        if "web_protocol" not in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
    }


def _open_fds() -> int | None:
    """Open file descriptors of this process (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return None


async def _server_sees_no_connection(sim: Simulator) -> None:
    # The server learns that a client socket closed on its next read, which an
    # injected latency (at most 4 virtual seconds) may hold back: wait, bounded.
    with anyio.fail_after(10):
        while sim.stats.open_connections:  # noqa: ASYNC110 - no event to wait on
            await anyio.sleep(0.1)


@asynccontextmanager
async def _nothing_left_behind(sim: Simulator) -> AsyncIterator[Client]:
    """A client whose tasks, connections and descriptors must all be gone after it closes."""
    tasks, fds = _client_tasks(), _open_fds()
    async with Client(api_key=KEY, base_url=sim.base_url) as client:
        yield client
        assert _client_tasks() == tasks  # nothing outlives a cancelled call, client still open
    await _server_sees_no_connection(sim)
    assert _open_fds() == fds


async def test_leaving_or_cancelling_the_watcher_at_random_points() -> None:
    """The watcher's `async with` left at a random moment, or cancelled from outside while the
    consumer waits, 30 times under latency and faults: no task, connection or fd survives."""
    rng = random.Random(11)
    async with Simulator(api_key=KEY, seed=4, faults=SLOW, max_active=100) as sim:
        ids = [sim.create_batch(3)["batch_id"] for _ in range(6)]
        async with _nothing_left_behind(sim) as client:
            for round_number in range(30):
                when = rng.uniform(0.0, 60.0)
                if round_number % 2:
                    with anyio.move_on_after(when):  # cancelled from outside
                        async with client.watch(ids, **FAST) as watcher:
                            async for _ in watcher:
                                pass
                else:
                    async with client.watch(ids, **FAST) as watcher:
                        await anyio.sleep(when)  # left without iterating
        assert sim.stats.total_requests > 30


async def _drain_list(client: Client) -> None:
    async for _ in client.batches.list(page_limit=2):
        pass


async def _drain_results(client: Client, batch_id: str) -> None:
    async with client.batches.results(batch_id) as items:
        async for _ in items:
            await anyio.sleep(0.5)  # a slow consumer, so cancellation lands between lines


async def _plain_results(client: Client, batch_id: str) -> None:
    async for _ in client.batches.results(batch_id):  # no `async with`: the stream closes itself
        await anyio.sleep(0.5)


def _calls(client: Client, batch_id: str) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: client.batches.retrieve(batch_id),
        lambda: _drain_list(client),
        lambda: _drain_results(client, batch_id),
        lambda: _plain_results(client, batch_id),
        lambda: client.batches.cancel(batch_id),
        lambda: client.batches.create(
            [{"video": {"type": "asset_id", "asset_id": "a"}}],
            defaults={"prompt": {"input_text": "Summarise."}},
        ),
    ]


async def test_cancelling_single_calls_at_random_points() -> None:
    """Every endpoint's call cancelled at 20 random moments each (mid-connect, mid-body,
    mid-retry, between result lines): no task, connection or descriptor is left."""
    rng = random.Random(7)
    async with Simulator(api_key=KEY, seed=6, faults=SLOW, max_active=1000) as sim:
        batch_ids = [sim.create_batch(12)["batch_id"] for _ in range(4)]
        await anyio.sleep(3600)  # finished batches have results to stream
        cancelled = 0
        async with _nothing_left_behind(sim) as client:
            for _ in range(20):
                for call in _calls(client, rng.choice(batch_ids)):
                    # Injected faults may fail a call (a typed error is fine); leaks are not.
                    with (
                        anyio.move_on_after(rng.uniform(0.0, 6.0)) as scope,
                        contextlib.suppress(AsyncBatchError),
                    ):
                        await call()
                    cancelled += scope.cancelled_caught
        assert cancelled > 20  # the timings did cut calls short, not only let them finish


async def test_leaving_the_watcher_during_a_429_pause_is_prompt() -> None:
    """A watcher paused by a 429 with Retry-After 3600 s exits its `async with` at once."""
    rule = FaultRule(rate=1.0, kinds=["429"], endpoints=["retrieve", "list"], retry_after=3600.0)
    async with (
        Simulator(api_key=KEY, seed=1, faults=[rule]) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(2)["batch_id"]
        async with client.watch([batch_id], **FAST) as watcher:
            with anyio.move_on_after(60):
                async for _ in watcher:
                    pass
            assert watcher.statistics().paused_until is not None
            left_at = anyio.current_time()
        assert anyio.current_time() - left_at < 0.5
        assert sim.stats.requests["retrieve"] + sim.stats.requests.get("list", 0) == 1


async def test_leaving_the_watcher_during_retry_backoff_is_prompt() -> None:
    """A watcher backing off after 503s (up to 60 s apart) exits its `async with` at once."""
    rule = FaultRule(rate=1.0, kinds=["503"])
    async with (
        Simulator(api_key=KEY, seed=1, faults=[rule]) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(2)["batch_id"]
        async with client.watch([batch_id], min_interval=5.0, max_interval=60.0) as watcher:
            with anyio.move_on_after(200):
                async for _ in watcher:
                    pass
            assert watcher.statistics().retries >= 3
            left_at = anyio.current_time()
        assert anyio.current_time() - left_at < 0.5


async def test_a_call_cancelled_during_a_retry_after_sleep_returns_at_once() -> None:
    """A retrieve sleeping out a 50 s Retry-After stops when cancelled, not 50 s later; so does
    `batches.wait` paused by a 429, and closing the client afterwards is immediate too."""
    rule = FaultRule(rate=1.0, kinds=["429"], retry_after=50.0)
    async with Simulator(api_key=KEY, seed=1, faults=[rule]) as sim:
        batch_id = sim.create_batch(2)["batch_id"]
        client = Client(api_key=KEY, base_url=sim.base_url, retry=RetryPolicy(max_attempts=5))
        started = anyio.current_time()
        with anyio.move_on_after(5.0):
            await client.batches.retrieve(batch_id)
        with anyio.move_on_after(5.0):
            await client.batches.wait(batch_id)
        await client.aclose()
        assert anyio.current_time() - started == pytest.approx(10.0, abs=0.5)
        assert sim.stats.requests["retrieve"] == 2
