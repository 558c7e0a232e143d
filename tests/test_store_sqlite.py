"""SQLiteStore: the StateStore contract on a file, its transactions, a watcher resuming."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncbatch import (
    Batch,
    Client,
    EventKind,
    MemoryStore,
    StateStore,
    StateStoreError,
    StoredBatch,
)
from asyncbatch._stores.sqlite import SQLiteStore
from asyncbatch._stores.url import open_store
from asyncbatch.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "sim-key"
FAST: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "seed": 1}
STATUSES = ["pending", "processing", "canceling", "completed", "canceled", "mystery"]
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot(batch_id: str, status: str, finished: int, queued: int) -> Batch:
    """A batch snapshot with the fields `is_stale` compares."""
    return Batch(
        batch_id=batch_id,
        status=status,
        analysis_mode="general",
        model_name="pegasus1.5",
        total_items=10,
        created_at=CREATED,
        expires_at=CREATED + timedelta(days=1),
        ready_items=finished,
        queued_items=queued,
    )


def random_records(rng: random.Random, count: int, ids: list[str]) -> list[StoredBatch]:
    """Records in a random order, forwards and backwards, some final, some without snapshot."""
    records = []
    for _ in range(count):
        batch_id = rng.choice(ids)
        if rng.random() < 0.1:
            records.append(StoredBatch(batch_id=batch_id))
            continue
        status = rng.choice(STATUSES)
        shot = snapshot(batch_id, status, rng.randint(0, 10), rng.randint(0, 10))
        final = status in ("completed", "canceled") and rng.random() < 0.5
        records.append(StoredBatch(batch_id=batch_id, snapshot=shot, final=final))
    return records


async def same_as_memory_store(store: StateStore, seed: int) -> None:
    """Apply one random sequence of calls to ``store`` and to a MemoryStore; compare loads."""
    rng = random.Random(seed)
    ids = [f"b{i}" for i in range(4)]
    reference = MemoryStore()
    await store.track(ids[:2])
    await reference.track(ids[:2])
    for record in random_records(rng, 150, ids):
        forget = rng.random() < 0.02
        for target in (store, reference):
            if forget:
                await target.forget(record.batch_id)
            await target.acknowledge(record)
        assert sorted(await store.load(), key=key) == sorted(await reference.load(), key=key)


def key(record: StoredBatch) -> str:
    return record.batch_id


async def test_acknowledge_follows_the_supersedes_rule(tmp_path: Path) -> None:
    """Random acknowledgements leave exactly what the in-memory reference keeps."""
    async with SQLiteStore(tmp_path / "state.db") as store:
        await same_as_memory_store(store, seed=7)


async def test_track_keeps_existing_records_and_forget_drops(tmp_path: Path) -> None:
    """track adds empty records without overwriting; forget removes one record."""
    acked = StoredBatch(batch_id="a", snapshot=snapshot("a", "processing", 2, 3))
    async with SQLiteStore(tmp_path / "state.db") as store:
        await store.acknowledge(acked)
        await store.track(["a", "b", "b"])
        assert sorted(await store.load(), key=key) == [acked, StoredBatch(batch_id="b")]
        await store.forget("a")
        await store.forget("missing")
        assert await store.load() == [StoredBatch(batch_id="b")]


async def test_records_survive_reopening_and_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    """What one store acknowledged, a new store on the same file loads; the journal is WAL."""
    path = tmp_path / "state.db"
    final = StoredBatch(batch_id="a", snapshot=snapshot("a", "completed", 10, 0), final=True)
    async with SQLiteStore(path) as store:
        await store.acknowledge(final)
    async with SQLiteStore(path, synchronous="NORMAL") as again:
        assert await again.load() == [final]
        await again.acknowledge(StoredBatch(batch_id="a", snapshot=snapshot("a", "pending", 0, 9)))
        assert await again.load() == [final]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_concurrent_writers_on_one_file_never_go_backwards(tmp_path: Path) -> None:
    """Two stores (two connections) racing on one file keep the furthest record of each batch."""
    path = tmp_path / "state.db"
    ids = [f"b{i}" for i in range(3)]
    steps = [
        StoredBatch(batch_id=b, snapshot=snapshot(b, "processing", n, 10 - n))
        for n in range(11)
        for b in ids
    ]
    async with SQLiteStore(path) as first, SQLiteStore(path) as second:

        async def play(store: SQLiteStore, order: list[StoredBatch]) -> None:
            for record in order:
                await store.acknowledge(record)

        async with anyio.create_task_group() as group:
            group.start_soon(play, first, steps)
            group.start_soon(play, second, list(reversed(steps)))
        kept = {r.batch_id: r.snapshot for r in await first.load()}
    assert {b: s.ready_items for b, s in kept.items() if s is not None} == dict.fromkeys(ids, 10)


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    """After aclose every call raises RuntimeError; closing twice is fine."""
    store = SQLiteStore(tmp_path / "state.db")
    await store.track(["a"])
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.load()


def test_synchronous_mode_is_checked(tmp_path: Path) -> None:
    """Only FULL and NORMAL are accepted: anything else could silently weaken durability."""
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "state.db", synchronous="OFF")  # type: ignore[arg-type]


async def test_watcher_resumes_from_the_file_after_a_restart(tmp_path: Path) -> None:
    """A watcher stopped mid-batch and restarted on the file reports the rest, then nothing."""
    path = tmp_path / "state.db"
    async with (
        Simulator(api_key=KEY, seed=4, item_seconds=30.0, items_at_once=1) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        async with SQLiteStore(path) as store, client.watch([batch_id], state=store, **FAST) as w:
            seen = await anext(w)
            await anext(w)  # acknowledges `seen`; this one is left unacknowledged
        await anyio.sleep(3600)
        async with SQLiteStore(path) as store:
            async with client.watch(state=store, resume=True, **FAST) as watcher:
                events = [event async for event in watcher]
            async with client.watch(state=store, resume=True, **FAST) as watcher:
                assert [event async for event in watcher] == []
    assert [e.kind for e in events] == [EventKind.DONE]
    assert events[0].previous == seen.batch


async def test_state_urls_name_memory_and_sqlite_stores(tmp_path: Path) -> None:
    """memory:// and sqlite:/// URLs open the matching store; only Redis offers replicas."""
    async with open_store("memory://") as memory:
        assert isinstance(memory.store, MemoryStore)
        assert memory.gate is None
        assert memory.leases is None
    absolute = tmp_path / "state.db"
    async with open_store(f"sqlite:///{absolute}?synchronous=normal") as opened:
        assert isinstance(opened.store, SQLiteStore)
        assert opened.store.path == absolute
        await opened.store.track(["a"])
    async with SQLiteStore(absolute) as store:
        assert await store.load() == [StoredBatch(batch_id="a")]
    relative = open_store("sqlite:///state.db")
    assert isinstance(relative.store, SQLiteStore)
    assert relative.store.path == Path("state.db")


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite://host/x.db", "sqlite:///x.db?synchronous=OFF", "postgres://u:pw@h/db"],
)
def test_malformed_state_urls_are_refused_without_showing_passwords(url: str) -> None:
    """A URL that names no supported store raises ValueError; a password never shows."""
    with pytest.raises(ValueError, match=r"sqlite|unsupported") as caught:
        open_store(url)
    assert "pw" not in str(caught.value)


async def test_a_store_that_cannot_open_raises_state_store_error(tmp_path: Path) -> None:
    """A path SQLite cannot open (a directory) is a StateStoreError with the cause chained."""
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(StateStoreError, match="SQLite state store") as info:
            await store.load()
        assert isinstance(info.value.__cause__, sqlite3.Error)
    finally:
        await store.aclose()
