"""Microseconds a state store adds per acknowledgement, per load, and per shared-gate request.

Run: ``.venv/bin/python -m benchmarks.store_overhead`` (``--help`` for sizes).

What a durable watcher pays on top of polling:

* ``acknowledge``: once per event the consumer acknowledges (each call a new,
  further-along snapshot, so every one is written);
* ``load``: a resuming watcher once, and a replica at every lease renewal
  (``lease_seconds / 3``), with ``--batches`` records kept;
* ``gate acquire``: once per request with a shared `RequestGate` (``LocalGate``
  for one process, ``RedisGate`` for replicas);
* ``leases claim``: a replica's renewal of ``--batches`` leases.

Stores: memory, SQLite (``synchronous`` FULL and NORMAL, in a temporary
directory) and Redis: ``--redis URL``, or a throwaway ``redis-server`` on
loopback when one is installed. Each figure is the median over ``--repeats``
of the mean time per call over ``--calls`` calls, on a plain asyncio loop.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from redis.asyncio import Redis

from asyncbatch import Batch, LocalGate, MemoryStore, StateStore, StoredBatch
from asyncbatch._stores.sqlite import SQLiteStore
from asyncbatch.redis import RedisGate, RedisLeases, RedisStore

from ._report import machine_line, median, table

Operation = Callable[[int], Awaitable[object]]
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_overhead")
    parser.add_argument("--calls", type=int, default=500, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100, help="records kept in the store")
    parser.add_argument("--redis", help="redis://HOST:PORT/DB (default: start redis-server)")
    return parser.parse_args(argv)


def snapshot(batch_id: str, finished: int) -> Batch:
    return Batch(
        batch_id=batch_id,
        status="processing",
        analysis_mode="general",
        model_name="pegasus1.5",
        total_items=1_000_000,
        created_at=CREATED,
        expires_at=CREATED + timedelta(days=1),
        ready_items=finished,
        processing_items=1,
    )


async def per_call(operation: Operation, calls: int, repeats: int) -> float:
    """Median over repeats of the mean seconds per call."""
    means = []
    for repeat in range(repeats):
        started = time.perf_counter()
        for i in range(calls):
            await operation(repeat * calls + i)
        means.append((time.perf_counter() - started) / calls)
    return median(means)


async def measure_store(store: StateStore, args: argparse.Namespace) -> dict[str, float]:
    ids = [f"batch-{i:05d}" for i in range(args.batches)]
    await store.track(ids)

    async def acknowledge(n: int) -> None:
        batch_id = ids[n % len(ids)]
        await store.acknowledge(StoredBatch(batch_id=batch_id, snapshot=snapshot(batch_id, n)))

    async def load(_: int) -> object:
        return await store.load()

    return {
        "acknowledge": await per_call(acknowledge, args.calls, args.repeats),
        "load": await per_call(load, max(1, args.calls // 10), args.repeats),
    }


async def measure_redis_extras(
    client: Redis, prefix: str, args: argparse.Namespace
) -> dict[str, float]:
    gate = RedisGate(client, prefix=prefix)
    leases = RedisLeases(client, "bench", 30.0, prefix=prefix)
    ids = [f"batch-{i:05d}" for i in range(args.batches)]

    async def acquire(_: int) -> None:
        await gate.acquire()

    async def claim(_: int) -> object:
        return await leases.claim(ids)

    return {
        "gate acquire": await per_call(acquire, args.calls, args.repeats),
        "leases claim": await per_call(claim, max(1, args.calls // 10), args.repeats),
    }


async def measure_local_gate(args: argparse.Namespace) -> float:
    gate = LocalGate(1e9, 1e9)

    async def acquire(_: int) -> None:
        await gate.acquire()

    return await per_call(acquire, args.calls, args.repeats)


@contextmanager
def redis_url(given: str | None) -> Iterator[str | None]:
    """The URL to measure against: given, a throwaway server, or None without one."""
    if given is not None:
        yield given
        return
    try:
        from tests._redis_server import redis_server  # noqa: PLC0415 - only when needed
    except ImportError:
        yield None
        return
    if shutil.which("redis-server") is None:
        yield None
        return
    with redis_server() as url:
        yield url


async def run(args: argparse.Namespace, workdir: Path, url: str | None) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(store: str, figures: dict[str, float]) -> None:
        for operation, seconds in figures.items():
            rows.append([store, operation, f"{seconds * 1e6:.1f}"])

    add("memory", await measure_store(MemoryStore(), args))
    add("memory", {"gate acquire": await measure_local_gate(args)})
    for mode in ("FULL", "NORMAL"):
        path = workdir / f"{mode}.db"
        async with SQLiteStore(path, synchronous="FULL" if mode == "FULL" else "NORMAL") as db:
            add(f"sqlite {mode}", await measure_store(db, args))
    if url is not None:
        # Keys of its own, deleted after: the server may be someone's real one.
        prefix = f"asyncbatch-bench:{uuid.uuid4().hex}:"
        client = Redis.from_url(url)
        try:
            add("redis", await measure_store(RedisStore(client, prefix=prefix), args))
            add("redis", await measure_redis_extras(client, prefix, args))
        finally:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
    return rows


def main(argv: Sequence[str] | None = None) -> list[list[str]]:
    args = parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncbatch-")))
        url = stack.enter_context(redis_url(args.redis))
        rows = anyio.run(run, args, workdir, url)
    print(machine_line())
    print(f"{args.batches} records kept; median of {args.repeats} repeats of {args.calls} calls")
    if url is None:
        print("redis: not measured (no --redis and no redis-server installed)")
    print(table("Store overhead per call", ["store", "operation", "µs per call"], rows))
    return rows


if __name__ == "__main__":
    main()
