"""The watcher end to end against the simulator, on virtual time."""

from __future__ import annotations

import asyncio
import math
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp import web

import asyncbatch
from asyncbatch import (
    AuthenticationError,
    Client,
    DecodeError,
    Event,
    EventKind,
    NotFoundError,
    Strategy,
    WaitTimeoutError,
)
from asyncbatch._tracker import VERIFY_INTERVALS
from asyncbatch.testing import FaultRule, Simulator
from tests._snapshots import snapshot

pytestmark = pytest.mark.anyio

KEY = "sim-key"
FAST: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "seed": 3}


@asynccontextmanager
async def running(**sim_options: Any) -> AsyncIterator[tuple[Simulator, Client]]:
    options: dict[str, Any] = {"item_seconds": 30.0, "max_active": 1000, **sim_options}
    async with (
        Simulator(api_key=KEY, seed=11, **options) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        yield sim, client


async def collect(watcher: asyncbatch.Watcher) -> list[Event]:
    return [event async for event in watcher]


def by_batch(events: Sequence[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.batch_id].append(event)
    return grouped


def assert_invariants(events: Sequence[Event], sim: Simulator) -> None:
    """Exactly one final event per batch, last; each `done` matches the server's final state."""
    for batch_id, history in by_batch(events).items():
        finals = [e for e in history if e.is_final]
        assert len(finals) == 1, (batch_id, [e.kind for e in history])
        assert history[-1] is finals[0]
        for before, after in pairwise(history):
            assert after.previous is before.batch
        if finals[0].kind is EventKind.DONE:
            assert finals[0].batch is not None
            server = sim.batch(batch_id)
            assert finals[0].batch.status == server["status"]
            assert finals[0].batch.finished_items == (
                server["ready_items"] + server["failed_items"] + server["canceled_items"]
            )


@pytest.mark.parametrize("strategy", [Strategy.PER_ID, Strategy.SWEEP, Strategy.AUTO])
async def test_many_batches_each_end_once(strategy: Strategy) -> None:
    """Twenty batches run to the end: seen first, one done each, matching the server."""
    async with running(item_failure_rate=0.2) as (sim, client):
        ids = [sim.create_batch(random.Random(i).randint(1, 8))["batch_id"] for i in range(20)]
        async with client.watch(ids, strategy=strategy, **FAST) as watcher:
            events = await collect(watcher)
        assert_invariants(events, sim)
        grouped = by_batch(events)
        assert set(grouped) == set(ids)
        assert all(history[0].kind is EventKind.SEEN for history in grouped.values())
        assert all(h[-1].kind is EventKind.DONE for h in grouped.values())
        assert {e.kind for e in events} >= {EventKind.STATUS, EventKind.PROGRESS}


async def test_sweep_saves_requests() -> None:
    """With 5 active and 200 finished batches, a sweep tick costs one request, not five."""
    counts = {}
    for strategy in (Strategy.PER_ID, Strategy.SWEEP):
        async with running(item_seconds=20.0) as (sim, client):
            finished = [sim.create_batch(1)["batch_id"] for _ in range(200)]
            await anyio.sleep(3600)  # let them complete
            active = [sim.create_batch(20)["batch_id"] for _ in range(5)]
            before, started = sim.stats.total_requests, anyio.current_time()
            async with client.watch(
                finished + active, strategy=strategy, max_concurrency=16, **FAST
            ) as watcher:
                events = await collect(watcher)
            assert_invariants(events, sim)
            counts[strategy] = sim.stats.total_requests - before
            if strategy is Strategy.SWEEP:
                stats = watcher.statistics()
                # One GET per batch that was or became finished, plus the sweeps, plus
                # each active batch's safety-net GET every VERIFY_INTERVALS max_intervals.
                verify_period = VERIFY_INTERVALS * FAST["max_interval"]
                safety = 5 * math.ceil((anyio.current_time() - started) / verify_period)
                assert 205 <= stats.polls <= 205 + safety
                assert sim.stats.requests["list"] == stats.sweeps
    # Beyond the one GET each batch needs to learn its end, per-ID polls the five
    # active batches every tick while the sweep asks once (and GETs each active
    # batch only every VERIFY_INTERVALS ticks of an idle batch).
    per_id_extra, sweep_extra = counts[Strategy.PER_ID] - 205, counts[Strategy.SWEEP] - 205
    assert sweep_extra * 2.5 < per_id_extra, counts


async def test_cancel_midway_reports_canceling_then_canceled() -> None:
    """A batch canceled while watched goes through `canceling` to a `canceled` done."""
    async with running(items_at_once=1) as (sim, client):
        batch_id = sim.create_batch(6)["batch_id"]
        kinds: list[tuple[str, str | None]] = []
        async with client.watch([batch_id], **FAST) as watcher:
            async for event in watcher:
                kinds.append((event.kind, event.batch.status if event.batch else None))
                if event.batch is not None and event.batch.status == "processing":
                    await client.batches.cancel(batch_id)
        assert ("status", "canceling") in kinds
        assert kinds[-1] == ("done", "canceled")


async def test_expiry_ends_with_expired() -> None:
    """A batch that outlives expires_at ends `expired` with unfinished items canceled."""
    async with running(item_seconds=400.0, items_at_once=1, expire_after=600.0) as (sim, client):
        batch_id = sim.create_batch(5)["batch_id"]
        async with client.watch([batch_id], **FAST) as watcher:
            events = await collect(watcher)
        final = events[-1]
        assert final.kind is EventKind.DONE
        assert final.batch is not None
        assert final.batch.status == "expired"
        assert final.batch.canceled_items > 0


async def test_deleted_batch_is_gone_and_others_go_on() -> None:
    """A batch that disappears gets `gone`; the other batch still finishes."""
    async with running() as (sim, client):
        doomed, other = sim.create_batch(2)["batch_id"], sim.create_batch(2)["batch_id"]
        async with client.watch([doomed, other], strategy="per_id", **FAST) as watcher:
            events = []
            async for event in watcher:
                events.append(event)
                if event.batch_id == doomed and event.kind is EventKind.SEEN:
                    sim.remove_batch(doomed)
        finals = {e.batch_id: e for e in events if e.is_final}
        assert finals[doomed].kind is EventKind.GONE
        assert isinstance(finals[doomed].error, NotFoundError)
        assert finals[other].kind is EventKind.DONE


async def test_add_and_discard_while_watching() -> None:
    """IDs added mid-watch are followed to the end; discarded ones produce nothing more."""
    async with running() as (sim, client):
        first, late, dropped = (sim.create_batch(3)["batch_id"] for _ in range(3))
        async with client.watch([first, dropped], **FAST) as watcher:
            events = []
            async for event in watcher:
                events.append(event)
                if event.batch_id == first and event.kind is EventKind.SEEN:
                    watcher.add(late)
                    watcher.discard(dropped)
        assert_invariants([e for e in events if e.batch_id != dropped], sim)
        assert {e.batch_id for e in events if e.is_final} == {first, late}
        assert not [e for e in events if e.batch_id == dropped if e.is_final]


@pytest.mark.parametrize(("strategy", "bound"), [("per_id", 2 + 4), ("sweep", 2 + 30)])
async def test_slow_consumer_bounds_memory(strategy: str, bound: int) -> None:
    """With a tiny buffer and a dawdling consumer, buffered events stay within
    buffer_size plus what the requests in flight return (a sweep: one per open batch)."""
    async with running(item_seconds=5.0) as (sim, client):
        ids = [sim.create_batch(8)["batch_id"] for _ in range(30)]
        peak = 0
        options: dict[str, Any] = {
            **FAST,
            "buffer_size": 2,
            "max_concurrency": 4,
            "strategy": strategy,
        }
        async with client.watch(ids, **options) as watcher:
            async for _ in watcher:
                peak = max(peak, watcher.statistics().buffered)
                await anyio.sleep(30)
        assert peak <= bound
        assert watcher.statistics().open == 0


async def test_deadline_errors_open_batches_then_ends() -> None:
    """At the deadline every open batch gets one `error` with WaitTimeoutError."""
    async with running(item_seconds=10_000.0) as (sim, client):
        ids = [sim.create_batch(2)["batch_id"] for _ in range(3)]
        started = anyio.current_time()
        async with client.watch(ids, timeout=120.0, stop_when_done=False, **FAST) as watcher:
            events = await collect(watcher)
        assert anyio.current_time() - started == pytest.approx(120.0, abs=1.0)
        finals = [e for e in events if e.is_final]
        assert sorted(e.batch_id for e in finals) == sorted(ids)
        assert all(isinstance(e.error, WaitTimeoutError) for e in finals)


async def test_service_mode_keeps_running_until_exit() -> None:
    """With stop_when_done=False iteration waits for new batches after all ended."""
    async with running(item_seconds=5.0) as (sim, client):
        first = sim.create_batch(1)["batch_id"]
        second_id = ""
        done: list[str] = []
        async with client.watch([first], stop_when_done=False, **FAST) as watcher:
            async for event in watcher:
                if event.kind is EventKind.DONE:
                    done.append(event.batch_id)
                    if len(done) == 2:
                        break
                    await anyio.sleep(500)  # nothing open now; the watcher must not end
                    second_id = sim.create_batch(1)["batch_id"]
                    watcher.add(second_id)
        assert done == [first, second_id]


@pytest.mark.parametrize("strategy", ["per_id", "sweep"])
async def test_high_fault_rate_still_ends_every_batch_correctly(strategy: str) -> None:
    """Under 40% injected faults of every kind, each batch ends once and matches the server."""
    async with running(fault_rate=0.4, item_seconds=20.0, item_failure_rate=0.1) as (sim, client):
        ids = [sim.create_batch(4)["batch_id"] for _ in range(12)]
        options: dict[str, Any] = {**FAST, "max_decode_failures": 20, "strategy": strategy}
        async with client.watch(ids, **options) as watcher:
            events = await collect(watcher)
        assert_invariants(events, sim)
        assert all(e.kind is EventKind.DONE for e in events if e.is_final)
        assert watcher.statistics().retries > 0
        assert sum(sim.stats.faults.values()) >= 10


async def test_bodies_that_never_decode_error_that_batch() -> None:
    """When every status body is malformed, the batch ends with `error` carrying DecodeError."""
    rule = FaultRule(rate=1.0, kinds=["malformed"], endpoints=["retrieve"])
    async with running(faults=[rule]) as (sim, client):
        batch_id = sim.create_batch(2)["batch_id"]
        async with client.watch([batch_id], max_decode_failures=3, **FAST) as watcher:
            events = await collect(watcher)
        assert [e.kind for e in events] == [EventKind.ERROR]
        assert isinstance(events[0].error, DecodeError)
        assert watcher.statistics().polls == 3


async def test_wrong_key_errors_each_batch_with_the_cause() -> None:
    """A 401 ends every watched batch with `error` carrying AuthenticationError."""
    async with running() as (sim, _):
        ids = [sim.create_batch(1)["batch_id"] for _ in range(3)]
        async with (
            Client(api_key="wrong", base_url=sim.base_url) as client,
            client.watch(ids, **FAST) as watcher,
        ):
            events = await collect(watcher)
        assert sorted(e.batch_id for e in events) == sorted(ids)
        assert all(isinstance(e.error, AuthenticationError) for e in events)


async def test_caller_exception_comes_out_unwrapped() -> None:
    """An exception raised inside `async with watcher` is not wrapped in an ExceptionGroup."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(1)["batch_id"]
        with pytest.raises(KeyError, match="mine"):
            await raise_inside_watch(client, batch_id)


async def raise_inside_watch(client: Client, batch_id: str) -> None:
    async with client.watch([batch_id], **FAST) as watcher:
        async for _ in watcher:
            raise KeyError("mine")


async def test_cancelling_at_random_points_leaves_nothing_behind() -> None:
    """Cancelling the consumer at many random moments leaves no task and no connection."""
    rng = random.Random(5)
    async with Simulator(api_key=KEY, seed=2, fault_rate=0.2, max_active=100) as sim:
        ids = [sim.create_batch(3)["batch_id"] for _ in range(6)]
        baseline = client_tasks()
        async with Client(api_key=KEY, base_url=sim.base_url) as client:
            for _ in range(25):
                with anyio.move_on_after(rng.uniform(0.0, 90.0)):
                    async with client.watch(ids, **FAST) as watcher:
                        await collect(watcher)
                assert client_tasks() == baseline
        # The server notices closed sockets once its handlers (some held by an
        # injected latency of at most 1 s) next read: wait for that, bounded.
        with anyio.fail_after(5):
            while sim.stats.open_connections:  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.1)


def client_tasks() -> set[asyncio.Task[Any]]:
    """Tasks other than the simulator's own request handlers."""
    return {
        task
        for task in asyncio.all_tasks()
        if "web_protocol" not in task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
    }


async def test_wait_returns_the_final_batch() -> None:
    """batches.wait() returns the terminal snapshot."""
    async with running() as (sim, client):
        batch_id = sim.create_batch(3)["batch_id"]
        final = await client.batches.wait(batch_id, min_interval=2.0)
        assert final.is_terminal
        assert final.batch_id == batch_id
        assert final.status == sim.batch(batch_id)["status"]


async def test_wait_raises_typed_errors() -> None:
    """wait() raises NotFoundError for a missing batch and WaitTimeoutError on timeout."""
    async with running(item_seconds=10_000.0) as (sim, client):
        with pytest.raises(NotFoundError):
            await client.batches.wait("0" * 24)
        batch_id = sim.create_batch(1)["batch_id"]
        with pytest.raises(WaitTimeoutError):
            await client.batches.wait(batch_id, timeout=60.0)


async def test_create_and_wait() -> None:
    """create_and_wait() creates the batch and returns it finished."""
    async with running(item_seconds=5.0) as (_, client):
        requests = [{"video": {"type": "asset_id", "asset_id": f"asset-{i}"}} for i in range(3)]
        final = await client.batches.create_and_wait(
            requests, defaults={"prompt": {"input_text": "Summarise."}}, min_interval=1.0
        )
        assert final.status == "completed"
        assert final.ready_items == 3


async def test_rate_limit_pauses_all_polling() -> None:
    """After a 429 with Retry-After no request reaches the server until the pause ends."""
    times: list[float] = []
    batch = snapshot("processing", queued=1, processing=1)

    async def handler(request: web.Request) -> web.Response:
        times.append(anyio.current_time())
        if len(times) == 3:
            return web.json_response(
                {"code": "too_many_requests", "message": "slow down"},
                status=429,
                headers={"Retry-After": "600"},
            )
        status = "completed" if len(times) > 8 else "processing"
        body = {**asyncbatch_json(batch), "batch_id": request.match_info["id"], "status": status}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v1.3/analyze/batches/{id}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            Client(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1.3") as client,
            client.watch(["a" * 24, "b" * 24], strategy="per_id", **FAST) as watcher,
        ):
            await collect(watcher)
    finally:
        await runner.cleanup()
    limited_at = times[2]
    after = [t for t in times[3:] if t > limited_at]
    assert after, times
    assert min(after) >= limited_at + 600
    assert watcher.statistics().rate_limited == 1


def asyncbatch_json(batch: asyncbatch.Batch) -> dict[str, Any]:
    encoded: dict[str, Any] = msgspec.to_builtins(batch)
    return encoded


async def test_failing_entry_raises_the_typed_error_and_cleans_up() -> None:
    """If entering fails (watch_active with a refused key), the cause is raised as it is
    and the watcher is closed: it cannot be iterated or entered again."""
    async with running() as (sim, _), Client(api_key="wrong", base_url=sim.base_url) as client:
        watcher = asyncbatch.Watcher(client, watch_active=True, min_interval=2.0)
        with pytest.raises(AuthenticationError):
            await watcher.__aenter__()
        with pytest.raises(RuntimeError, match="only once"):
            await watcher.__aenter__()
