"""Everything with an ``aclose`` is an `anyio.abc.AsyncResource`: ``async with`` works the same
on each, and its ``__aexit__`` is anyio's, not one written again by hand.

Two classes keep their own ``__aexit__`` because leaving them does more than closing: the
`Watcher` exits the task group of its workers (letting the caller's exception through untouched)
and releases its leases; the `Simulator` stops its webhook-delivery task before it closes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from anyio.abc import AsyncResource
from redis.asyncio import Redis

import asyncbatch
from asyncbatch import MemoryStore, SQLiteStore, StateStore, StoredBatch
from asyncbatch.redis import RedisStore

pytestmark = pytest.mark.anyio

ROOT = Path(asyncbatch.__file__).parent
OWN_AEXIT = {"Watcher", "Simulator", "Job"}  # each exits a task group of its own
ID = "a" * 24


def _classes_with(method: str) -> set[str]:
    """The package's classes that define ``method`` themselves."""
    found = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.AsyncFunctionDef | ast.FunctionDef) and item.name == method
                for item in node.body
            ):
                found.add(node.name)
    return found


def test_only_the_task_group_owners_write_their_own_aexit() -> None:
    """Any other ``__aexit__`` would repeat `AsyncResource`'s: only the watcher, the simulator and
    a job, which exit task groups they own, keep theirs (the scan sees exactly those)."""
    assert _classes_with("__aexit__") == OWN_AEXIT


async def test_every_store_is_closed_by_async_with(tmp_path: Path) -> None:
    """Memory, SQLite and Redis stores all work as ``async with store:``, giving the store."""
    client = Redis()  # no connection is made: nothing here talks to a server
    try:
        stores: list[StateStore] = [
            MemoryStore(),
            SQLiteStore(tmp_path / "state.db"),
            RedisStore(client, prefix="test:"),
        ]
        for store in stores:
            assert isinstance(store, AsyncResource)
        async with MemoryStore() as memory:
            await memory.acknowledge(StoredBatch(batch_id=ID, final=True))
            assert [r.batch_id for r in await memory.load()] == [ID]
        async with RedisStore(client) as redis_store:
            assert isinstance(redis_store, RedisStore)
        async with SQLiteStore(tmp_path / "state.db") as sqlite:
            await sqlite.track([ID])
        async with SQLiteStore(tmp_path / "state.db") as again:
            assert [r.batch_id for r in await again.load()] == [ID]
    finally:
        await client.aclose()
