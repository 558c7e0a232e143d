"""Watch state, request budget and leases in Redis, shared by watcher replicas.

Needs the ``redis`` extra (``pip install 'asyncbatch[redis]'``) and a Redis
server 5 or newer. Three pieces, each on a ``redis.asyncio.Redis`` client
you pass in (they do not close it) and under a key ``prefix``:

* `RedisStore`, a `StateStore`: acknowledged records in one hash. An
  acknowledgement is one Lua script that applies `StoredBatch.supersedes`
  atomically, so replicas acknowledging the same batch never move it back.
* `RedisGate`, a `RequestGate`: one token bucket and one 429 pause for every
  replica, kept and decided in Lua.
* `RedisLeases`, the `Leases` of replicas: each batch leased to one replica at
  a time, the batches spread over the live replicas; a lease not renewed
  within ``lease_seconds`` is taken over.

Time: the gate and the leases read the Redis server's clock (``TIME``), one
clock for every replica whatever their hosts' clocks say. Tests may pass a
``clock`` (seconds as a float) to use their own instead, such as the event
loop's virtual clock; every replica must then share that clock.

Usage::

    client = redis.asyncio.Redis.from_url("redis://localhost:6379/0")
    async with Watcher(
        api, ids, state=RedisStore(client), resume=True,
        gate=RedisGate(client, requests_per_second=5),
        leases=RedisLeases(client, lease_seconds=15),
    ) as watcher:
        ...
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, cast

import anyio
from anyio.abc import AsyncResource
from redis.asyncio import Redis

from ._coordination import DEFAULT_PAUSE
from ._events import STATUS_RANK
from ._stores.memory import StoredBatch, decode_record, encode_record
from ._stores.redis_errors import DEFAULT_PREFIX, redis_errors
from ._stores.redis_errors import awaited as _awaited

__all__ = ["DEFAULT_PREFIX", "RedisGate", "RedisLeases", "RedisStore"]

Clock = Callable[[], float]

# Every script starts from this: the time given by the caller, or the server's.
_NOW_LUA: Final = """
local function now_from(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# ---------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------

# KEYS: records hash, progress hash. ARGV: batch id, record, its progress.
# A progress is "final,has_snapshot,rank,terminal,finished,queued" (rank -1:
# unknown status); the comparison is `StoredBatch.supersedes` and `is_stale`,
# rule for rule.
_ACK_LUA: Final = """
local function parse(text)
  local v = {}
  for n in string.gmatch(text, '[^,]+') do v[#v + 1] = tonumber(n) end
  return {final = v[1] == 1, has = v[2] == 1, rank = v[3], terminal = v[4] == 1,
          finished = v[5], queued = v[6]}
end
local function supersedes(new, kept)
  if kept.final then return false end
  if new.final or not kept.has then return true end
  if not new.has then return false end
  if kept.rank >= 0 and new.rank >= 0 and new.rank < kept.rank then return false end
  if kept.terminal and not new.terminal then return false end
  return not (new.finished < kept.finished or new.queued > kept.queued)
end
local kept = redis.call('HGET', KEYS[2], ARGV[1])
if kept and not supersedes(parse(ARGV[3]), parse(kept)) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""


def progress(record: StoredBatch) -> str:
    """How far along ``record`` is, in the form the acknowledgement script compares."""
    snapshot = record.snapshot
    if snapshot is None:
        return f"{int(record.final)},0,-1,0,0,0"
    rank = STATUS_RANK.get(snapshot.status, -1)
    return (
        f"{int(record.final)},1,{rank},{int(snapshot.is_terminal)},"
        f"{snapshot.finished_items},{snapshot.queued_items}"
    )


class RedisStore(AsyncResource):
    """A `StateStore` in Redis: every record in the hash ``{prefix}records``.

    Args:
        client: a ``redis.asyncio.Redis``; left open by `aclose`.
        prefix: the start of every key this store uses.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._records = f"{prefix}records"
        self._progress = f"{prefix}progress"
        self._ack = client.register_script(_ACK_LUA)

    def __repr__(self) -> str:
        return f"<asyncbatch.redis.RedisStore {self._records!r}>"

    @redis_errors
    async def load(self) -> list[StoredBatch]:
        raw = await _awaited(self._client.hgetall(self._records))
        return [decode_record(value) for value in cast(dict[bytes, bytes], raw).values()]

    @redis_errors
    async def track(self, batch_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hsetnx(self._records, batch_id, encode_record(StoredBatch(batch_id=batch_id)))
            await pipe.execute()

    @redis_errors
    async def acknowledge(self, record: StoredBatch) -> None:
        args: list[str | bytes] = [record.batch_id, encode_record(record), progress(record)]
        await self._ack(keys=[self._records, self._progress], args=args)

    @redis_errors
    async def forget(self, batch_id: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._records, batch_id)
            pipe.hdel(self._progress, batch_id)
            await pipe.execute()

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the caller."""


# ---------------------------------------------------------------------------
# Gate
# ---------------------------------------------------------------------------

# KEYS: bucket hash, pause key. ARGV: now ('' for the server's), rate (0 for
# none), burst. Returns the seconds to wait as a string (Lua numbers would
# reach Python as truncated integers); "0" means a token was taken.
_ACQUIRE_LUA: Final = (
    _NOW_LUA
    + """
local now = now_from(ARGV[1])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return tostring(pause - now) end
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
if rate <= 0 then return '0' end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
-- A bucket left alone refills to full: dropping it then loses nothing.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
)

# KEYS: pause key. ARGV: now, seconds to pause. Pauses only ever lengthen.
_PAUSE_LUA: Final = (
    _NOW_LUA
    + """
local now = now_from(ARGV[1])
local untl = now + tonumber(ARGV[2])
local kept = tonumber(redis.call('GET', KEYS[1]) or '0')
if kept >= untl then return tostring(kept) end
redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return tostring(untl)
"""
)


class RedisGate:
    """A `RequestGate` shared through Redis: one budget and one 429 pause for all replicas.

    Args:
        client: a ``redis.asyncio.Redis``.
        requests_per_second: the budget of every replica together (None: no
            budget, pauses only).
        burst: requests allowed at once (default: one second's worth, at least 1).
        prefix: the start of every key this gate uses.
        clock: seconds as a float, shared by every replica; default the
            Redis server's clock.
    """

    def __init__(
        self,
        client: Redis,
        requests_per_second: float | None = None,
        burst: float | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
    ) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self._rate = requests_per_second
        self._burst = max(1.0, burst if burst is not None else (requests_per_second or 1.0))
        self._keys = [f"{prefix}gate:bucket", f"{prefix}gate:pause"]
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._pause = client.register_script(_PAUSE_LUA)

    def __repr__(self) -> str:
        return f"<asyncbatch.redis.RedisGate requests_per_second={self._rate}>"

    @redis_errors
    async def acquire(self) -> None:
        args = [self._rate or 0, self._burst]
        while True:
            # Loops: another replica may take the token we waited for, or pause again.
            wait = float(await self._acquire(keys=self._keys, args=[self._now(), *args]))
            if wait <= 0:
                return
            await anyio.sleep(wait)

    @redis_errors
    async def rate_limited(self, retry_after: float | None) -> None:
        seconds = DEFAULT_PAUSE if retry_after is None else max(0.0, retry_after)
        await self._pause(keys=self._keys[1:], args=[self._now(), seconds])

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())


# ---------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------

# KEYS: the replica registry, then one lease hash per batch. ARGV: owner, now,
# lease seconds, key TTL in ms, then the batch IDs. Returns the positions (in
# the batch IDs) of the leases held now.
#
# Splitting: every live replica is in the registry (a sorted set scored by
# expiry). A batch's preferred replica is the live one with the highest
# sha1(owner, batch): replicas agree on it without talking, and when one
# joins or dies only its share moves. A free lease goes at once to its
# preferred replica; anyone may take it once it has stayed free a whole
# lease period (its preferred replica does not watch that batch). A holder
# hands a lease over (deletes it) once its preferred replica has asked for it.
_CLAIM_LUA: Final = (
    _NOW_LUA
    + """
local me, now, lease, ttl = ARGV[1], now_from(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZADD', KEYS[1], tostring(now + lease), me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl)
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local function preferred(batch)
  local best, weight = me, nil
  for _, owner in ipairs(live) do
    local w = redis.sha1hex(owner .. '\\n' .. batch)
    if weight == nil or w > weight then best, weight = owner, w end
  end
  return best == me
end
local function take(key)
  redis.call('DEL', key)
  redis.call('HSET', key, 'owner', me, 'until', tostring(now + lease))
  redis.call('PEXPIRE', key, ttl)
end
local held = {}
for i = 2, #KEYS do
  local key, mine = KEYS[i], preferred(ARGV[i + 3])
  local f = redis.call('HMGET', key, 'owner', 'until', 'free_since', 'wanted_by', 'wanted_until')
  local owner, untl = f[1], tonumber(f[2])
  local free = owner == false or untl == nil or untl <= now
  if owner == me and not mine and f[4] ~= false and f[4] ~= me and tonumber(f[5]) > now then
    redis.call('DEL', key)
  elseif owner == me or (free and mine) then
    take(key)
    held[#held + 1] = i - 1
  elseif free then
    local since = tonumber(f[3])
    if since ~= nil and now - since >= lease then
      take(key)
      held[#held + 1] = i - 1
    elseif since == nil then
      redis.call('HSET', key, 'free_since', tostring(now))
      redis.call('PEXPIRE', key, ttl * 2)
    end
  elseif mine then
    redis.call('HSET', key, 'wanted_by', me, 'wanted_until', tostring(now + lease))
  end
end
return held
"""
)

# KEYS: the registry, then lease hashes. ARGV: owner. Deletes only the leases
# that are ours, and leaves the registry, so our share moves to others at once.
_RELEASE_LUA: Final = """
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'owner') == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 0
"""


class RedisLeases:
    """`Leases` in Redis: the key ``{prefix}lease:{batch_id}`` names a batch's holder.

    Replicas split the batches without talking to each other: each claim
    registers its owner in ``{prefix}replicas`` for ``lease_seconds``, and
    every batch has one preferred replica among those registered (rendezvous
    hashing). A free batch goes to its preferred replica at once, and to any
    replica once it has stayed free for ``lease_seconds`` (its preferred
    replica does not watch it); a replica hands a batch over when the
    preferred one asks for it, so a replica that joins gets its share. A
    replica that dies leaves the registry, and its leases expire, within
    ``lease_seconds``; the survivors take its batches at their next claim.

    Args:
        client: a ``redis.asyncio.Redis``.
        owner: this replica's name, unique in the fleet (default: host, PID
            and a random part).
        lease_seconds: how long a claim lasts unless renewed.
        prefix: the start of every key these leases use.
        clock: seconds as a float, shared by every replica; default the
            Redis server's clock.
    """

    def __init__(
        self,
        client: Redis,
        owner: str | None = None,
        lease_seconds: float = 15.0,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client = client
        self._lease_seconds = float(lease_seconds)
        self._prefix = f"{prefix}lease:"
        self._registry = f"{prefix}replicas"
        self._clock = clock
        self._claim = client.register_script(_CLAIM_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def __repr__(self) -> str:
        return f"<asyncbatch.redis.RedisLeases owner={self.owner!r}>"

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    @redis_errors
    async def claim(self, batch_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(batch_ids))
        if not ids:
            return set()
        now = "" if self._clock is None else repr(self._clock())
        # Redis drops a lease key a little after it would expire anyway, so
        # finished batches leave nothing behind.
        ttl_ms = math.ceil(self._lease_seconds * 1000) + 1000
        args: list[str | float] = [self.owner, now, self._lease_seconds, ttl_ms]
        keys = [self._registry, *(self._prefix + b for b in ids)]
        positions = await self._claim(keys=keys, args=[*args, *ids])
        return {ids[int(i) - 1] for i in cast(list[Any], positions)}

    @redis_errors
    async def release(self, batch_ids: Iterable[str]) -> None:
        keys = [self._prefix + b for b in dict.fromkeys(batch_ids)]
        await self._release(keys=[self._registry, *keys], args=[self.owner])

    @redis_errors
    async def holder(self, batch_id: str) -> str | None:
        """Who holds ``batch_id``'s lease key now (expired leases included until dropped)."""
        owner = await _awaited(self._client.hget(self._prefix + batch_id, "owner"))
        return None if owner is None else cast(bytes, owner).decode()

    @redis_errors
    async def replicas(self) -> list[str]:
        """The owners registered now (each claim registers its owner for ``lease_seconds``)."""
        owners = await _awaited(self._client.zrange(self._registry, 0, -1))
        return [cast(bytes, owner).decode() for owner in owners]
