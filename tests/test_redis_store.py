"""RedisStore on a real redis-server: the StateStore contract, atomic acks, a watcher resuming."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from asyncbatch import Client, EventKind, StoredBatch
from asyncbatch._stores.url import open_store
from asyncbatch.redis import RedisStore, progress
from asyncbatch.testing import Simulator
from benchmarks import store_overhead
from tests._redis_server import connected, fresh_prefix
from tests.test_store_sqlite import same_as_memory_store, snapshot

pytestmark = pytest.mark.anyio

KEY = "sim-key"
FAST: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "seed": 1}


async def test_acknowledge_follows_the_supersedes_rule(redis_url: str) -> None:
    """Random acknowledgements leave exactly what the in-memory reference keeps."""
    async with connected(redis_url) as client:
        await same_as_memory_store(RedisStore(client, prefix=fresh_prefix()), seed=11)


async def test_track_keeps_existing_records_and_forget_drops(redis_url: str) -> None:
    """track adds empty records without overwriting; forget removes record and progress."""
    prefix = fresh_prefix()
    acked = StoredBatch(batch_id="a", snapshot=snapshot("a", "completed", 10, 0), final=True)
    async with connected(redis_url) as client:
        store = RedisStore(client, prefix=prefix)
        await store.acknowledge(acked)
        await store.track(["a", "b"])
        assert sorted(await store.load(), key=lambda r: r.batch_id) == [
            acked,
            StoredBatch(batch_id="b"),
        ]
        await store.forget("a")
        assert await store.load() == [StoredBatch(batch_id="b")]
        # Forgotten means forgotten: a fresh record for "a" is accepted again.
        pending = StoredBatch(batch_id="a", snapshot=snapshot("a", "pending", 0, 10))
        await store.acknowledge(pending)
        assert pending in await store.load()
        assert await client.hkeys(f"{prefix}progress") == [b"a"]
        await store.aclose()
        assert await client.ping()  # the client is the caller's: still open


async def test_prefixes_keep_stores_apart(redis_url: str) -> None:
    """Two prefixes on one server are two independent stores."""
    async with connected(redis_url) as client:
        first, second = RedisStore(client, prefix=fresh_prefix()), RedisStore(client)
        await first.track(["only-here"])
        assert all(r.batch_id != "only-here" for r in await second.load())


async def test_racing_acknowledgements_end_at_the_furthest_record(redis_url: str) -> None:
    """Two clients acking one batch forwards and backwards at once keep the furthest snapshot."""
    prefix = fresh_prefix()
    steps = [
        StoredBatch(batch_id="a", snapshot=snapshot("a", "processing", n, 10 - n))
        for n in range(11)
    ]
    async with connected(redis_url) as one, connected(redis_url) as two:
        stores = RedisStore(one, prefix=prefix), RedisStore(two, prefix=prefix)

        async def play(store: RedisStore, order: list[StoredBatch]) -> None:
            for record in order:
                await store.acknowledge(record)

        async with anyio.create_task_group() as group:
            group.start_soon(play, stores[0], steps)
            group.start_soon(play, stores[1], list(reversed(steps)))
        assert await stores[0].load() == [steps[-1]]


def test_progress_encodes_what_is_stale_compares() -> None:
    """The progress string carries final, snapshot presence, rank, terminal, finished, queued."""
    assert progress(StoredBatch(batch_id="a")) == "0,0,-1,0,0,0"
    done = StoredBatch(batch_id="a", snapshot=snapshot("a", "completed", 7, 0), final=True)
    assert progress(done) == "1,1,3,1,7,0"
    odd = StoredBatch(batch_id="a", snapshot=snapshot("a", "mystery", 2, 5))
    assert progress(odd) == "0,1,-1,0,2,5"


async def test_watcher_resumes_from_redis_after_a_restart(redis_url: str) -> None:
    """A watcher restarted on the same keys reports the completion against the acked snapshot."""
    prefix = fresh_prefix()
    async with (
        Simulator(api_key=KEY, seed=4, item_seconds=30.0, items_at_once=1) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
        connected(redis_url) as redis,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        store = RedisStore(redis, prefix=prefix)
        async with client.watch([batch_id], state=store, **FAST) as watcher:
            seen = await anext(watcher)
            await anext(watcher)  # acknowledges `seen` only
        await anyio.sleep(3600)
        again = RedisStore(redis, prefix=prefix)
        async with client.watch(state=again, resume=True, **FAST) as watcher:
            events = [event async for event in watcher]
        async with client.watch(state=again, resume=True, **FAST) as watcher:
            assert [event async for event in watcher] == []
    assert [e.kind for e in events] == [EventKind.DONE]
    assert events[0].previous == seen.batch


def test_redis_state_url_opens_store_gate_and_leases(redis_url: str) -> None:
    """A redis:// state URL gives a store, gate and leases under its prefix, closed together.

    On a plain event loop: the URL's client keeps redis-py's socket timeouts, which the
    virtual clock could jump to while the server answers."""
    prefix = fresh_prefix()

    async def scenario() -> None:
        opened = open_store(f"{redis_url}?prefix={prefix}")
        assert isinstance(opened.store, RedisStore)
        assert opened.gate is not None
        assert opened.leases is not None
        async with opened:
            await opened.store.track(["a"])
            await opened.gate(10.0, None).acquire()
            leases = opened.leases("me", 5.0)
            assert leases.lease_seconds == 5.0
            assert await leases.claim(["a"]) == {"a"}
        async with connected(redis_url) as client:
            assert await client.hkeys(f"{prefix}records") == [b"a"]
            assert await client.hget(f"{prefix}lease:a", "owner") == b"me"

    anyio.run(scenario)


def test_store_overhead_benchmark_measures_every_store_and_cleans_up(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks.store_overhead runs at tiny sizes, covers each store, and leaves no keys."""
    rows = store_overhead.main(
        ["--calls", "3", "--repeats", "1", "--batches", "4", "--redis", redis_url]
    )
    assert {row[0] for row in rows} == {"memory", "sqlite FULL", "sqlite NORMAL", "redis"}
    assert all(float(row[2]) > 0 for row in rows)
    assert "| redis         | leases claim |" in capsys.readouterr().out

    async def leftover() -> list[bytes]:
        async with connected(redis_url) as client:
            return [key async for key in client.scan_iter(match="asyncbatch-bench:*")]

    assert anyio.run(leftover) == []
