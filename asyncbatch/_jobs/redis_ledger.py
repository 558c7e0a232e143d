"""`RedisLedger`: a job's `Ledger` in Redis, so that processes on several machines (Airflow
workers, say) can carry one job in turn.

Keys, all under ``{prefix}job:`` (``P`` below), on one Redis server (not a Cluster: a script
reaches keys it finds as it goes):

* ``P meta``: hash of the meta values; ``P n``: hash of the counters (requests by state,
  ``requests``, ``attempts``);
* ``P i:LINE``: hash of one request: ``r`` request, ``c`` custom ID, ``s`` state, ``a``
  attempts, ``q`` seq while running, ``b`` batch ID, ``t`` task ID, ``d`` data, ``e`` error;
  ``P h:LINE``: hash of its attempts, number to ``[batch_id, status, task_id, error]``;
* ``P cid``: hash of custom ID to line (IDs are unique in a job);
* sorted sets of lines, scored by line: ``P wait`` (waiting), ``P run:SEQ`` (running in
  intent or batch ``SEQ``), ``P final`` (final), ``P dlv`` (delivered), ``P undel`` (final
  and not delivered);
* ``P b``: hash of the batches, ``SEQ:s`` state, ``SEQ:i`` batch ID, ``SEQ:n`` size; ``P
  bseq``: sorted set of their ``SEQ``.

Every write is one Lua script (a script runs whole or not at all; `set_meta` is one ``HSET``),
which returns the new counters for the synchronous reads to answer from. The one exception is
clearing a reading of the input that did not finish: SCAN and UNLINK, key by key, which is
safe because such a job was never started (its meta says its input is not complete) and the
next reading clears again. `settle` decides outcomes in Python on
what was read before; the script applies each only if the item is still running in that
batch with the attempts read, so applying twice changes nothing. Reads that grow with the
job take a page (an intent, ``limit`` outcomes) at a time: the client never holds every
request.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, Self, cast

import anyio
import msgspec
from redis.asyncio import Redis

from .._errors import DecodeError, StateStoreError
from .._models import ItemError, decode_body
from .._stores.redis_errors import DEFAULT_PREFIX, awaited, redis_errors
from .ledger import (
    FINAL_STATES,
    JOB_CANCELED,
    RUNNING,
    WAITING,
    Intake,
    Intent,
    ItemResult,
    Row,
    encoded,
    missing,
    settle,
    stored_attempt,
    stored_data,
    stored_error,
)
from .outcome import Attempt, JobOutcome, OutcomeStatus
from .redis_claim import RedisClaim

_STATES: Final = (WAITING, RUNNING, *FINAL_STATES)

# Every script starts with this. ARGV[1] is the job's key prefix. An optional value travels
# as '' (none) or '=' followed by the value, so that an empty string stays a value.
# `leave` and `enter` keep the counters and the sorted sets of an item's state in step.
# `summary` is what every script returns: its result, then the counters.
_COMMON: Final = """
local P = ARGV[1]
local COUNTS = P .. 'n'
local function item(line) return P .. 'i:' .. line end
local function put(key, field, arg)
  if arg == '' then redis.call('HDEL', key, field)
  else redis.call('HSET', key, field, string.sub(arg, 2)) end
end
local function leave(line, state, seq)
  redis.call('HINCRBY', COUNTS, state, -1)
  if state == 'waiting' then redis.call('ZREM', P .. 'wait', line)
  elseif state == 'running' then redis.call('ZREM', P .. 'run:' .. seq, line) end
end
local function enter(line, state, seq)
  redis.call('HINCRBY', COUNTS, state, 1)
  if state == 'waiting' then redis.call('ZADD', P .. 'wait', line, line)
  elseif state == 'running' then redis.call('ZADD', P .. 'run:' .. seq, line, line)
  else
    redis.call('ZADD', P .. 'final', line, line)
    if not redis.call('ZSCORE', P .. 'dlv', line) then
      redis.call('ZADD', P .. 'undel', line, line)
    end
  end
end
local function summary(result)
  local c = redis.call('HMGET', COUNTS, 'waiting', 'running', 'ready', 'failed', 'canceled',
                       'requests', 'attempts')
  local out = {result}
  for i = 1, 7 do out[#out + 1] = tonumber(c[i] or '0') end
  out[#out + 1] = redis.call('ZCARD', P .. 'dlv')
  return out
end
"""

# ARGV: P. The counters, for `open`.
_SUMMARY_LUA: Final = _COMMON + "return summary(0)"

# ARGV: P, then (line, custom ID, request) per row. Stores the rows whose line and custom
# ID are new; returns (line, custom ID, line that has it or '') of each other.
_INTAKE_LUA: Final = (
    _COMMON
    + """
local refused = {}
for i = 2, #ARGV, 3 do
  local line, cid, request = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = false
  if cid ~= '' then first = redis.call('HGET', P .. 'cid', string.sub(cid, 2)) end
  if first or redis.call('EXISTS', item(line)) == 1 then
    refused[#refused + 1] = line
    refused[#refused + 1] = cid
    refused[#refused + 1] = first or ''
  else
    if cid ~= '' then redis.call('HSET', P .. 'cid', string.sub(cid, 2), line) end
    redis.call('HSET', item(line), 'r', request, 's', 'waiting', 'a', 0)
    put(item(line), 'c', cid)
    redis.call('HINCRBY', COUNTS, 'requests', 1)
    enter(line, 'waiting', '')
  end
end
return summary(refused)
"""
)

# ARGV: P, size. A new intent (seq one past the highest kept, as SQLite's rowid) with the
# first ``size`` waiting lines; returns seq, then (line, request) of each.
_TAKE_LUA: Final = (
    _COMMON
    + """
local size = tonumber(ARGV[2])
local lines = {}
if size ~= 0 then
  local stop = -1
  if size > 0 then stop = size - 1 end
  lines = redis.call('ZRANGE', P .. 'wait', 0, stop)
end
local top = redis.call('ZRANGE', P .. 'bseq', -1, -1)
local seq = 1
if top[1] then seq = tonumber(top[1]) + 1 end
redis.call('ZADD', P .. 'bseq', seq, seq)
redis.call('HSET', P .. 'b', seq .. ':s', 'intent', seq .. ':n', #lines)
local taken = {seq}
for _, line in ipairs(lines) do
  leave(line, 'waiting', '')
  enter(line, 'running', seq)
  redis.call('HSET', item(line), 's', 'running', 'q', seq)
  redis.call('HDEL', item(line), 'b')
  taken[#taken + 1] = line
  taken[#taken + 1] = redis.call('HGET', item(line), 'r')
end
return summary(taken)
"""
)

# ARGV: P, seq. Returns (line, request) of each item still running in ``seq``.
_INTENT_LUA: Final = (
    _COMMON
    + """
local found = {}
for _, line in ipairs(redis.call('ZRANGE', P .. 'run:' .. ARGV[2], 0, -1)) do
  found[#found + 1] = line
  found[#found + 1] = redis.call('HGET', item(line), 'r')
end
return found
"""
)

# ARGV: P, seq, then lines. Returns, for each line, its attempts if it runs in ``seq``, else -1.
_RUNNING_LUA: Final = (
    _COMMON
    + """
local found = {}
for i = 3, #ARGV do
  local f = redis.call('HMGET', item(ARGV[i]), 's', 'q', 'a')
  if f[1] == 'running' and f[2] == ARGV[2] then found[#found + 1] = f[3]
  else found[#found + 1] = -1 end
end
return found
"""
)

# ARGV: P, seq, batch ID.
_CREATED_LUA: Final = (
    _COMMON
    + """
local seq, batch = ARGV[2], ARGV[3]
if redis.call('HEXISTS', P .. 'b', seq .. ':s') == 1 then
  redis.call('HSET', P .. 'b', seq .. ':s', 'active', seq .. ':i', batch)
end
for _, line in ipairs(redis.call('ZRANGE', P .. 'run:' .. seq, 0, -1)) do
  redis.call('HSET', item(line), 'b', batch)
end
return summary(0)
"""
)

# ARGV: P, seq.
_VOID_LUA: Final = (
    _COMMON
    + """
local seq = ARGV[2]
for _, line in ipairs(redis.call('ZRANGE', P .. 'run:' .. seq, 0, -1)) do
  leave(line, 'running', seq)
  enter(line, 'waiting', '')
  redis.call('HSET', item(line), 's', 'waiting')
  redis.call('HDEL', item(line), 'q')
end
redis.call('HDEL', P .. 'b', seq .. ':s', seq .. ':i', seq .. ':n')
redis.call('ZREM', P .. 'bseq', seq)
return summary(0)
"""
)

# ARGV: P, seq, batch ID, '1' to mark the batch ended, then per settled item: line, its
# attempts after this one, next state, task ID, data, error, attempt record. An item
# changes only if still running in ``seq`` with one attempt fewer. Returns how many did.
# The hot path of a job (a chunk of results per call): counters and sorted sets are
# written once per call, not once per item.
_SETTLE_LUA: Final = (
    _COMMON
    + """
local function each(command, key, lines, scored)
  for i = 1, #lines, 500 do
    local args = {}
    for j = i, math.min(i + 499, #lines) do
      if scored then args[#args + 1] = lines[j] end
      args[#args + 1] = lines[j]
    end
    redis.call(command, key, unpack(args))
  end
end
local seq, batch = ARGV[2], ARGV[3]
local left, into, undelivered, moved = {}, {}, {}, {}
local changed = 0
for i = 5, #ARGV, 7 do
  local line, attempts, state = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = item(line)
  local f = redis.call('HMGET', key, 's', 'q', 'a')
  if f[1] == 'running' and f[2] == seq and tonumber(f[3]) + 1 == tonumber(attempts) then
    local set, unset = {'s', state, 'a', attempts, 'b', batch}, {'q'}
    for k, field in ipairs({'t', 'd', 'e'}) do
      local arg = ARGV[i + 2 + k]
      if arg == '' then unset[#unset + 1] = field
      else set[#set + 1] = field; set[#set + 1] = string.sub(arg, 2) end
    end
    redis.call('HSET', key, unpack(set))
    redis.call('HDEL', key, unpack(unset))
    redis.call('HSET', P .. 'h:' .. line, attempts, ARGV[i + 6])
    left[#left + 1] = line
    into[state] = into[state] or {}
    table.insert(into[state], line)
    if state ~= 'waiting' and not redis.call('ZSCORE', P .. 'dlv', line) then
      undelivered[#undelivered + 1] = line
    end
    changed = changed + 1
  end
end
if changed > 0 then
  each('ZREM', P .. 'run:' .. seq, left, false)
  redis.call('HINCRBY', COUNTS, 'running', -changed)
  redis.call('HINCRBY', COUNTS, 'attempts', changed)
  for state, lines in pairs(into) do
    redis.call('HINCRBY', COUNTS, state, #lines)
    if state == 'waiting' then each('ZADD', P .. 'wait', lines, true)
    else each('ZADD', P .. 'final', lines, true) end
  end
  if #undelivered > 0 then each('ZADD', P .. 'undel', undelivered, true) end
end
if ARGV[4] == '1' and redis.call('HEXISTS', P .. 'b', seq .. ':s') == 1 then
  redis.call('HSET', P .. 'b', seq .. ':s', 'ended')
end
return summary(changed)
"""
)

# ARGV: P, error, then lines. Each not ready becomes failed, one attempt counted.
_REFUSE_LUA: Final = (
    _COMMON
    + """
for i = 3, #ARGV do
  local line = ARGV[i]
  local key = item(line)
  local f = redis.call('HMGET', key, 's', 'q')
  if f[1] and f[1] ~= 'ready' then
    leave(line, f[1], f[2])
    redis.call('HSET', key, 's', 'failed', 'e', ARGV[2])
    redis.call('HINCRBY', key, 'a', 1)
    redis.call('HDEL', key, 'q')
    redis.call('HINCRBY', COUNTS, 'attempts', 1)
    enter(line, 'failed', '')
  end
end
return summary(0)
"""
)

# ARGV: P, error. Every waiting item becomes canceled; returns how many.
_CANCEL_LUA: Final = (
    _COMMON
    + """
local lines = redis.call('ZRANGE', P .. 'wait', 0, -1)
for _, line in ipairs(lines) do
  leave(line, 'waiting', '')
  redis.call('HSET', item(line), 's', 'canceled', 'e', ARGV[2])
  enter(line, 'canceled', '')
end
return summary(#lines)
"""
)

# ARGV: P, line.
_ACK_LUA: Final = (
    _COMMON
    + """
if redis.call('EXISTS', item(ARGV[2])) == 1 then
  redis.call('ZADD', P .. 'dlv', ARGV[2], ARGV[2])
  redis.call('ZREM', P .. 'undel', ARGV[2])
end
return summary(0)
"""
)

# ARGV: P, then the lines to keep delivered; every other final outcome is undelivered.
_REDELIVER_LUA: Final = (
    _COMMON
    + """
redis.call('DEL', P .. 'dlv', P .. 'undel')
redis.call('ZUNIONSTORE', P .. 'undel', 1, P .. 'final')
for i = 2, #ARGV do
  if redis.call('EXISTS', item(ARGV[i])) == 1 then
    redis.call('ZADD', P .. 'dlv', ARGV[i], ARGV[i])
    redis.call('ZREM', P .. 'undel', ARGV[i])
  end
end
return summary(0)
"""
)

# ARGV: P, limit. The first ``limit`` undelivered items: line, its hash, its history hash.
_UNDELIVERED_LUA: Final = (
    _COMMON
    + """
local limit = tonumber(ARGV[2])
if limit == 0 then return {} end
local stop = -1
if limit > 0 then stop = limit - 1 end
local found = {}
for _, line in ipairs(redis.call('ZRANGE', P .. 'undel', 0, stop)) do
  found[#found + 1] = {line, redis.call('HGETALL', item(line)),
                       redis.call('HGETALL', P .. 'h:' .. line)}
end
return found
"""
)

# The job's keys besides its meta (cleared before a reading, and after a failed one).
_DATA_KEYS: Final = re.compile(rb"(?:n|cid|wait|final|dlv|undel|b|bseq|(?:i|h|run):\d+)")
_SCAN_COUNT: Final = 1000
_UNLINK_CHUNK: Final = 500

_Record = tuple[str, str, str | None, msgspec.Raw]
_record_decoder = msgspec.json.Decoder(_Record)
_record_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class _Batch:
    state: str
    batch_id: str | None


@dataclass(slots=True)
class _Pending:
    """An item read as running in a batch: the settlement the script re-checks and applies."""

    result: ItemResult
    attempts: int


class RedisLedger:
    """A job's `Ledger` in Redis under ``{prefix}job:`` (one job per prefix).

    Make one with `open`, which loads the small state (meta, counters, batches); the
    synchronous reads answer from it and every write keeps it up to date. One process
    carries a job at a time.
    """

    def __init__(self, client: Redis, *, prefix: str, owns_client: bool, claim: bool) -> None:
        self._client = client
        self._prefix = prefix
        self._p = f"{prefix}job:"
        self._owns_client = owns_client
        self._claim = RedisClaim(client, self._p) if claim else None
        self._claimed = False
        self._closed = False
        self._meta: dict[str, str] = {}
        self._counters: list[int] = [0] * 8
        self._batches: dict[int, _Batch] = {}
        register = client.register_script
        self._summary = register(_SUMMARY_LUA)
        self._intake = register(_INTAKE_LUA)
        self._take = register(_TAKE_LUA)
        self._intent_script = register(_INTENT_LUA)
        self._running = register(_RUNNING_LUA)
        self._created = register(_CREATED_LUA)
        self._void = register(_VOID_LUA)
        self._settle = register(_SETTLE_LUA)
        self._refuse = register(_REFUSE_LUA)
        self._cancel = register(_CANCEL_LUA)
        self._ack = register(_ACK_LUA)
        self._redeliver = register(_REDELIVER_LUA)
        self._undelivered = register(_UNDELIVERED_LUA)

    @classmethod
    async def open(
        cls,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        owns_client: bool = False,
        claim: bool = True,
    ) -> Self:
        """The ledger of the job under ``{prefix}job:`` (empty if there is none yet), its
        small state loaded; `StateStoreError` if Redis fails, or if another process holds
        the job (`RedisClaim`; ``claim=False`` only reads, never writes). With
        ``owns_client``, `aclose` closes ``client`` (and so does a failure here)."""
        ledger = cls(client, prefix=prefix, owns_client=owns_client, claim=claim)
        try:
            if ledger._claim is not None:
                await ledger._claim.take(ledger._where())
                ledger._claimed = True
            await ledger._load()
        except BaseException:
            await ledger.aclose()
            raise
        return ledger

    def __repr__(self) -> str:
        return f"<asyncbatch RedisLedger {self._where()}>"

    def _where(self) -> str:
        """The server, database and prefix, never the password."""
        kwargs = self._client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"{where}/{kwargs.get('db', 0)} prefix={self._prefix!r}"

    async def aclose(self) -> None:
        """Give up the claim, and close the client if this ledger owns it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._claim is not None and self._claimed:
                # A Redis out of reach cannot be told; the claim then lapses by itself.
                with anyio.CancelScope(shield=True), suppress(StateStoreError):
                    await self._claim.release()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def hold(self) -> None:
        """Keep this process's claim on the job while it runs (until cancelled)."""
        if self._claim is None:
            await anyio.sleep_forever()
        else:
            await self._claim.keep()

    @redis_errors
    async def _load(self) -> None:
        raw_meta = cast(dict[bytes, bytes], await awaited(self._client.hgetall(self._p + "meta")))
        self._meta = {_text(k, "meta key"): _text(v, "meta value") for k, v in raw_meta.items()}
        await self._run(self._summary, [])
        raw = cast(dict[bytes, bytes], await awaited(self._client.hgetall(self._p + "b")))
        self._batches = _batches(raw)

    # -- small state --------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A meta value, or None."""
        return self._meta.get(key)

    def counts(self) -> dict[str, int]:
        """Requests by state (states with none are missing)."""
        return {s: n for s, n in zip(_STATES, self._counters, strict=False) if n}

    def totals(self) -> tuple[int, int, int]:
        """``(requests, attempts, delivered)`` over the whole job."""
        return self._counters[5], self._counters[6], self._counters[7]

    def batch_count(self, state: str) -> int:
        """Batches in ``state`` (``intent``, ``active`` or ``ended``)."""
        return sum(1 for b in self._batches.values() if b.state == state)

    def active_batches(self) -> dict[str, int]:
        """Batch ID to ``seq`` of every batch created and not yet collected."""
        return {
            b.batch_id: seq
            for seq, b in self._batches.items()
            if b.state == "active" and b.batch_id is not None
        }

    def known_batch_ids(self) -> set[str]:
        """Every batch ID this job created."""
        return {b.batch_id for b in self._batches.values() if b.batch_id is not None}

    def open_intents(self) -> list[int]:
        """Intents whose create's outcome is unknown."""
        return sorted(seq for seq, b in self._batches.items() if b.state == "intent")

    # -- meta and input -----------------------------------------------------------------

    @redis_errors
    async def set_meta(self, values: dict[str, str]) -> None:
        """Write ``values`` into meta (one ``HSET``: all or none)."""
        if values:
            mapping: dict[Any, Any] = dict(values)
            await awaited(self._client.hset(self._p + "meta", mapping=mapping))
            self._meta.update(values)

    @asynccontextmanager
    async def ingesting(self, meta: dict[str, str], limit: int) -> AsyncIterator[Intake]:
        """Store requests a chunk per script, then write ``meta``; see `Ledger.ingesting`.

        A reading that never wrote its meta (interrupted, or failed) is cleared before this
        one starts, and a failed one is cleared again at once (meta written before stays,
        as it would in SQLite)."""
        # A job whose input is complete is never cleared: it is not this reading's to undo.
        fresh = self._meta.get("input") != "complete"
        if fresh:
            await self._clear()
        intake = Intake(self._store_rows, limit)
        try:
            yield intake
            await intake.close()
        except BaseException:
            if fresh:
                with anyio.CancelScope(shield=True), suppress(StateStoreError):
                    await self._clear()  # else the next reading clears it
            raise
        if intake.problems:
            if fresh:
                await self._clear()
            return
        await self.set_meta(meta)

    @redis_errors
    async def _store_rows(self, rows: list[Row]) -> list[str]:
        args: list[str | int | bytes] = []
        for line, custom_id, request in rows:
            args += [line, _opt(custom_id), request]
        refused = cast(list[bytes], await self._run(self._intake, args))
        problems = []
        for i in range(0, len(refused), 3):
            number, cid, first = refused[i : i + 3]
            custom_id = _text(cid[1:], "custom ID") if cid else None
            where = f"line {_text(first, 'line')}" if first else "an earlier line"
            at = _text(number, "line")
            problems.append(f"line {at}: custom_id {custom_id!r} repeats {where}")
        return problems

    @redis_errors
    async def _clear(self) -> None:
        """Unlink every key of the job but its meta (SCAN, never KEYS: Redis stays free)."""
        pattern = _glob_escape(self._p) + "*"
        found: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
            if _DATA_KEYS.fullmatch(cast(bytes, key)[len(self._p.encode()) :]):
                found.append(cast(bytes, key))
            if len(found) >= _UNLINK_CHUNK:
                await awaited(self._client.unlink(*found))
                found = []
        if found:
            await awaited(self._client.unlink(*found))
        self._counters = [0] * 8
        self._batches = {}

    # -- intents and batches ------------------------------------------------------------

    @redis_errors
    async def new_intent(self, size: int) -> Intent:
        """Take up to ``size`` waiting requests (first lines first) into a new intent."""
        taken = cast(list[Any], await self._run(self._take, [size]))
        seq = int(taken[0])
        self._batches[seq] = _Batch("intent", None)
        return _intent(seq, taken[1:])

    @redis_errors
    async def intent(self, seq: int) -> Intent:
        """The items of intent (or batch) ``seq`` still running in it, first lines first."""
        found = await self._intent_script(keys=[], args=[self._p, seq])
        return _intent(seq, cast(list[bytes], found))

    @redis_errors
    async def created(self, seq: int, batch_id: str) -> None:
        """Record that intent ``seq`` became batch ``batch_id``."""
        await self._run(self._created, [seq, batch_id])
        if (batch := self._batches.get(seq)) is not None:
            batch.state, batch.batch_id = "active", batch_id

    @redis_errors
    async def void_intent(self, seq: int) -> None:
        """Intent ``seq`` made no batch: its requests wait again, no attempt counted."""
        await self._run(self._void, [seq])
        self._batches.pop(seq, None)

    # -- results ------------------------------------------------------------------------

    @redis_errors
    async def apply_results(
        self,
        seq: int,
        batch_id: str,
        results: Sequence[ItemResult],
        *,
        batch_status: str,
        max_attempts: int,
        canceling: bool,
    ) -> int:
        """Settle the items of batch ``seq`` that ``results`` name; see `Ledger.apply_results`."""
        pending = await self._running_in(seq, results)
        args = _settlements(pending, batch_id, batch_status, max_attempts, canceling)
        return int(await self._run(self._settle, [seq, batch_id, "0", *args]))

    @redis_errors
    async def end_batch(
        self, seq: int, batch_id: str, *, batch_status: str, max_attempts: int, canceling: bool
    ) -> int:
        """Mark batch ``seq`` ended, settling what its results left, in one script."""
        lines = await awaited(self._client.zrange(f"{self._p}run:{seq}", 0, -1))
        left = missing(_int(n, "line") for n in cast(list[bytes], lines))
        pending = await self._running_in(seq, left)
        args = _settlements(pending, batch_id, batch_status, max_attempts, canceling)
        changed = int(await self._run(self._settle, [seq, batch_id, "1", *args]))
        if (batch := self._batches.get(seq)) is not None:
            batch.state = "ended"
        return changed

    async def _running_in(self, seq: int, results: Iterable[ItemResult]) -> list[_Pending]:
        """The results whose items were running in ``seq`` when read, with their attempts."""
        results = list(results)
        args: list[str | int] = [self._p, seq, *(r.line for r in results)]
        found = cast(list[Any], await self._running(keys=[], args=args))
        return [
            _Pending(result, _int(attempts, "attempts"))
            for result, attempts in zip(results, found, strict=True)
            if attempts != -1
        ]

    @redis_errors
    async def refuse(self, lines: Sequence[int], error: ItemError) -> None:
        """The API refused these requests outright: final ``failed``, one attempt counted."""
        await self._run(self._refuse, [encoded(error) or b"", *lines])

    @redis_errors
    async def cancel_waiting(self) -> int:
        """End every waiting request as ``canceled``; returns how many."""
        return int(await self._run(self._cancel, [encoded(JOB_CANCELED) or b""]))

    # -- delivery -----------------------------------------------------------------------

    @redis_errors
    async def undelivered(self, limit: int) -> list[JobOutcome]:
        """Up to ``limit`` final outcomes not yet acknowledged, first lines first."""
        found = await self._undelivered(keys=[], args=[self._p, limit])
        return [_outcome(*entry) for entry in cast(list[list[Any]], found)]

    @redis_errors
    async def acknowledge(self, line: int) -> None:
        """Mark the outcome of ``line`` delivered (on record when this returns)."""
        await self._run(self._ack, [line])

    @redis_errors
    async def redeliver_all_but(self, lines: Iterable[int]) -> None:
        """Make every final outcome undelivered except those of ``lines``."""
        await self._run(self._redeliver, list(lines))

    # -- plumbing -----------------------------------------------------------------------

    async def _run(self, script: Any, args: Sequence[str | int | bytes]) -> Any:
        """Run a writing script on this job; note the counters it returns, give its result."""
        reply = cast(list[Any], await script(keys=[], args=[self._p, *args]))
        self._note(reply)
        return reply[0]

    def _note(self, reply: Any) -> None:
        self._counters = [int(n) for n in cast(list[Any], reply)[1:9]]


def _opt(value: str | bytes | None) -> bytes:
    """An optional value as the scripts take it: ``b""`` for None, else ``b"="`` and it."""
    if value is None:
        return b""
    return b"=" + (value.encode() if isinstance(value, str) else value)


def _settlements(
    pending: list[_Pending], batch_id: str, batch_status: str, max_attempts: int, canceling: bool
) -> list[str | int | bytes]:
    """The settle script's arguments for ``pending``: `settle` decides each outcome here."""
    args: list[str | int | bytes] = []
    for item in pending:
        result, attempts = item.result, item.attempts + 1
        outcome = settle(
            result.status,
            batch_status=batch_status,
            attempts=attempts,
            max_attempts=max_attempts,
            canceling=canceling,
            error=result.error,
        )
        error = encoded(outcome.error)
        record = _record_encoder.encode(
            (batch_id, result.status, result.task_id, None if error is None else msgspec.Raw(error))
        )
        args += [result.line, attempts, outcome.state, _opt(result.task_id)]
        args += [_opt(encoded(result.data)), _opt(error), record]
    return args


def _intent(seq: int, flat: list[bytes]) -> Intent:
    lines = [_int(flat[i], "line") for i in range(0, len(flat), 2)]
    return Intent(seq, lines, [bytes(flat[i]) for i in range(1, len(flat), 2)])


def _batches(raw: dict[bytes, bytes]) -> dict[int, _Batch]:
    batches: dict[int, _Batch] = {}
    for key, value in raw.items():
        seq_text, _, field = key.partition(b":")
        batch = batches.setdefault(_int(seq_text, "batch seq"), _Batch("", None))
        if field == b"s":
            batch.state = _text(value, "batch state")
        elif field == b"i":
            batch.batch_id = _text(value, "batch ID")
    return batches


def _outcome(raw_line: bytes, item: list[bytes], history: list[bytes]) -> JobOutcome:
    fields = dict(zip(item[::2], item[1::2], strict=True))
    line = _int(raw_line, "line")
    what = f"stored item {line}"
    try:
        status = OutcomeStatus(_text(fields[b"s"], what))
    except (KeyError, ValueError) as exc:
        raise DecodeError(f"{what}: no final state", snippet=fields.get(b"s", b"")) from exc
    return JobOutcome(
        line=line,
        custom_id=_optional_text(fields.get(b"c"), what),
        status=status,
        data=stored_data(fields.get(b"d")),
        error=stored_error(fields.get(b"e")),
        attempts=_int(fields.get(b"a"), what),
        batch_id=_optional_text(fields.get(b"b"), what),
        task_id=_optional_text(fields.get(b"t"), what),
        history=_history(history, what),
    )


def _history(flat: list[bytes], what: str) -> tuple[Attempt, ...]:
    attempts = []
    for number, record in zip(flat[::2], flat[1::2], strict=True):
        batch_id, status, task_id, error = decode_body(_record_decoder, record, f"{what} attempt")
        raw_error = None if bytes(error) == b"null" else bytes(error)
        attempts.append(stored_attempt(_int(number, what), batch_id, status, task_id, raw_error))
    return tuple(sorted(attempts, key=lambda a: a.number))


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: {exc}", snippet=raw[:64]) from None


def _optional_text(raw: bytes | None, what: str) -> str | None:
    return None if raw is None else _text(raw, what)


def _int(raw: bytes | int | None, what: str) -> int:
    try:
        return int(cast(bytes, raw))
    except (TypeError, ValueError):
        snippet = raw if isinstance(raw, bytes) else b""
        raise DecodeError(f"{what}: not a number", snippet=snippet[:64]) from None


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
