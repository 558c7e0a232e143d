"""RedisGate and RedisLeases on a real redis-server, on the test's virtual clock.

Every gate and lease here reads time from the event loop (``clock=``), so a
lease expiry or a refill is a virtual sleep, and the assertions are exact.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from asyncbatch import Client, Event, RequestGate, StateStoreError, Watcher
from asyncbatch.redis import RedisGate, RedisLeases, RedisStore
from asyncbatch.testing import Simulator
from tests._redis_server import connected, fresh_prefix

pytestmark = pytest.mark.anyio

KEY = "sim-key"


async def admitted_within(gates: list[RequestGate], seconds: float) -> list[float]:
    """Times of every acquire that returned while each gate asked as fast as it could.

    Each asker stops by itself rather than by a timeout: the loop's clock jumps to
    the next timer while Redis answers, and a timeout would be such a timer."""
    times: list[float] = []
    end = anyio.current_time() + seconds
    async with anyio.create_task_group() as group:
        for gate in gates:
            group.start_soon(hammer, gate, times, end)
    return [t for t in times if t < end]


async def hammer(gate: RequestGate, times: list[float], end: float) -> None:
    while anyio.current_time() < end:
        await gate.acquire()
        times.append(anyio.current_time())


async def test_gates_share_one_budget(redis_url: str) -> None:
    """Three gates on one prefix together admit burst plus rate per second, no more."""
    prefix = fresh_prefix()
    async with connected(redis_url) as client:
        gates: list[RequestGate] = [
            RedisGate(client, 4.0, burst=3, prefix=prefix, clock=anyio.current_time)
            for _ in range(3)
        ]
        start = anyio.current_time()
        times = await admitted_within(gates, 10.0)
    assert len([t for t in times if t - start < 0.01]) == 3  # the burst, at once
    assert 3 + 4 * 10 - 2 <= len(times) <= 3 + 4 * 10


async def test_a_429_pauses_every_gate_and_pauses_only_grow(redis_url: str) -> None:
    """rate_limited on one gate holds back another until the longest pause has passed."""
    prefix = fresh_prefix()
    async with connected(redis_url) as client:
        first = RedisGate(client, prefix=prefix, clock=anyio.current_time)
        second = RedisGate(client, prefix=prefix, clock=anyio.current_time)
        start = anyio.current_time()
        await first.rate_limited(30.0)
        await second.rate_limited(5.0)  # shorter: must not cut the first short
        await second.acquire()
        assert anyio.current_time() - start == pytest.approx(30.0, abs=0.01)
        await first.rate_limited(None)  # no Retry-After: the default pause
        await second.acquire()
        assert anyio.current_time() - start == pytest.approx(60.0, abs=0.01)


def test_gate_options_are_checked() -> None:
    """A budget of zero or less requests per second is refused."""
    with pytest.raises(ValueError, match="positive"):
        RedisGate(Redis(), 0)


def preferred(owners: list[str], batch_id: str) -> str:
    """The replica a batch prefers: highest sha1 of owner and batch (the rule the script uses)."""
    return max(
        owners,
        key=lambda o: hashlib.sha1(f"{o}\n{batch_id}".encode(), usedforsecurity=False).hexdigest(),
    )


def leases(client: Redis, prefix: str, *names: str) -> list[RedisLeases]:
    return [RedisLeases(client, n, 30.0, prefix=prefix, clock=anyio.current_time) for n in names]


IDS = [f"batch-{i}" for i in range(12)]


async def test_leases_split_between_replicas_and_move_to_a_joining_one(redis_url: str) -> None:
    """A lone replica takes all; one that joins gets its preferred share, handed over, no more."""
    async with connected(redis_url) as client:
        alice, bob = leases(client, fresh_prefix(), "alice", "bob")
        bobs = {b for b in IDS if preferred(["alice", "bob"], b) == "bob"}
        assert 0 < len(bobs) < len(IDS)
        assert await alice.claim(IDS) == set(IDS)
        assert await bob.claim(IDS) == set()  # held: bob asks for its share
        assert await alice.claim(IDS) == set(IDS) - bobs  # ... and alice hands it over
        assert await bob.claim(IDS) == bobs
        assert await alice.claim(IDS) == set(IDS) - bobs  # stable from now on
        assert await bob.claim(IDS) == bobs
        assert sorted(await alice.replicas()) == ["alice", "bob"]


async def test_a_dead_replicas_leases_are_taken_over_after_lease_seconds(redis_url: str) -> None:
    """When a replica stops renewing, the others take its batches once its leases expire."""
    async with connected(redis_url) as client:
        alice, bob = leases(client, fresh_prefix(), "alice", "bob")
        await alice.claim(IDS)
        await bob.claim(IDS)
        await alice.claim(IDS)
        bobs = await bob.claim(IDS)
        await anyio.sleep(20)
        assert await alice.claim(IDS) == set(IDS) - bobs  # bob's leases still run
        await anyio.sleep(10.5)  # bob last renewed 30.5 s ago
        assert await alice.claim(IDS) == set(IDS)
        assert await alice.replicas() == ["alice"]
        assert await alice.holder(sorted(bobs)[0]) == "alice"


async def test_a_batch_its_preferred_replica_ignores_goes_to_another(redis_url: str) -> None:
    """A free batch the preferred replica never claims is taken by another after lease_seconds."""
    async with connected(redis_url) as client:
        alice, bob = leases(client, fresh_prefix(), "alice", "bob")
        orphan = next(b for b in IDS if preferred(["alice", "bob"], b) == "alice")
        await alice.claim(["something-else"])
        assert await bob.claim([orphan]) == set()
        for _ in range(3):
            await anyio.sleep(10)
            await alice.claim(["something-else"])  # alice stays alive, never wants it
        assert await bob.claim([orphan]) == {orphan}
        assert await bob.claim([orphan]) == {orphan}
        assert await alice.claim([orphan]) == set()  # now alice asks: it is handed over
        assert await bob.claim([orphan]) == set()
        assert await alice.claim([orphan]) == {orphan}


async def test_release_frees_only_our_own_leases(redis_url: str) -> None:
    """release hands our leases over at once and leaves other owners' leases alone."""
    async with connected(redis_url) as client:
        alice, bob = leases(client, fresh_prefix(), "alice", "bob")
        bobs = next(b for b in IDS if preferred(["alice", "bob"], b) == "bob")
        assert await alice.claim(["a"]) == {"a"}
        assert await bob.claim([bobs]) == {bobs}
        await alice.release(["a", bobs])
        assert await bob.replicas() == ["bob"]
        assert await bob.holder("a") is None
        assert await bob.holder(bobs) == "bob"
        assert await bob.claim(["a"]) == {"a"}


def test_default_owner_names_differ() -> None:
    """Two leases made without a name get different owners, so they never share claims."""
    client = Redis()
    assert RedisLeases(client).owner != RedisLeases(client).owner
    with pytest.raises(ValueError, match="positive"):
        RedisLeases(client, lease_seconds=0)


async def test_replicas_split_batches_and_each_final_event_comes_once(redis_url: str) -> None:
    """Two watchers on one Redis deliver every batch's final event exactly once between them."""
    prefix = fresh_prefix()
    options: dict[str, Any] = {"min_interval": 2.0, "max_interval": 20.0, "stop_when_done": False}
    async with (
        Simulator(api_key=KEY, seed=3, item_seconds=20.0, max_active=20) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as api,
        connected(redis_url) as client,
    ):
        ids = [sim.create_batch(3)["batch_id"] for _ in range(8)]
        finals: list[tuple[str, Event]] = []
        all_final = anyio.Event()

        async def replica(name: str) -> None:
            leases = RedisLeases(client, name, 9.0, prefix=prefix, clock=anyio.current_time)
            gate = RedisGate(client, 5.0, prefix=prefix, clock=anyio.current_time)
            store = RedisStore(client, prefix=prefix)
            async with api.watch(
                ids, state=store, gate=gate, leases=leases, seed=len(name), **options
            ) as watcher:
                async for event in watcher:
                    if event.is_final:
                        finals.append((name, event))
                        if len(finals) == len(ids):
                            all_final.set()

        with anyio.move_on_after(600):
            async with anyio.create_task_group() as group:
                group.start_soon(replica, "alice")
                group.start_soon(replica, "bob")
                await all_final.wait()
                await anyio.sleep(30)  # time for a wrong second delivery to show up
                group.cancel_scope.cancel()
    assert sorted(event.batch_id for _, event in finals) == sorted(ids)
    assert {name for name, _ in finals} == {"alice", "bob"}


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_redis_is_a_typed_error_for_store_and_watcher() -> None:
    """Redis refusing connections is a StateStoreError from the store, and reaches a
    watcher's consumer as that error, not wrapped in an ExceptionGroup."""
    client = Redis(host="127.0.0.1", port=_closed_port(), socket_timeout=None)
    try:
        with pytest.raises(StateStoreError, match="Redis"):
            await RedisStore(client).load()
        async with (
            Simulator(api_key="k", seed=1) as sim,
            Client(api_key="k", base_url=sim.base_url) as api,
        ):
            batch_id = sim.create_batch(1)["batch_id"]
            gate = RedisGate(client, requests_per_second=5)
            with pytest.raises(StateStoreError):
                await _consume(api.watch([batch_id], gate=gate))
    finally:
        await client.aclose()


async def _consume(watcher: Watcher) -> None:
    async with watcher:
        async for _ in watcher:
            pass
