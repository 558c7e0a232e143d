"""The `Ledger` contract, kept alike by `SQLiteLedger` (in memory and in a file) and
`RedisLedger` (on a real redis-server).

Each behaviour is one named test run against every kind; then a model-based test drives a
`SQLiteLedger` and a `RedisLedger` with the same random operations and checks after every
step that every read answers alike, a `RedisLedger` reopened on the same prefix included.
``ASYNCBATCH_LEDGER_EXAMPLES=500 pytest tests/test_jobs_ledger.py`` runs a long one with
fresh random cases (the short run is the same every time).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from asyncbatch import Client, DecodeError, JobOutcome, PollPolicy, StateStoreError
from asyncbatch._jobs.ledger import INTAKE_CHUNK, Intent, ItemResult, Ledger, Row
from asyncbatch._jobs.redis_claim import CLAIM_SECONDS, _gone
from asyncbatch._jobs.redis_ledger import RedisLedger
from asyncbatch._jobs.sqlite_ledger import SQLiteLedger
from asyncbatch._jobs.state import open_ledger
from asyncbatch._models import ItemError, TaskResult
from asyncbatch.testing import Simulator, VirtualTimeLoop
from benchmarks import ledger_overhead
from tests._redis_server import fresh_prefix, redis_server

pytestmark = pytest.mark.anyio

META = {"input": "complete", "tag": "cafe0123"}
REQUEST = b'{"video":{"type":"asset_id","asset_id":"a"}}'
ROOT = Path(__file__).resolve().parent.parent
_LONG_RUN = os.environ.get("ASYNCBATCH_LEDGER_EXAMPLES")


def redis_client(url: str) -> Redis:
    """A client without socket timeouts (on the virtual clock a timeout is a timer the loop
    may jump to while Redis is answering)."""
    return Redis.from_url(url, socket_timeout=None, socket_connect_timeout=None)


@dataclass
class Place:
    """Where a test's ledger lives: ``open`` gives a ledger on it, again and again for a
    file or a Redis prefix (``memory`` lives as long as its one ledger)."""

    kind: str
    path: Path
    url: str = ""
    prefix: str = ""

    async def open(self) -> Ledger:
        if self.kind == "memory":
            return SQLiteLedger(":memory:")
        if self.kind == "file":
            return SQLiteLedger(self.path)
        return await RedisLedger.open(redis_client(self.url), prefix=self.prefix, owns_client=True)


def _place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return Place("redis", tmp_path, url, fresh_prefix())
    return Place(request.param, tmp_path / "job.db")


@pytest.fixture(params=["memory", "file", "redis"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each kind of ledger."""
    return _place(request, tmp_path)


@pytest.fixture(params=["file", "redis"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """Each kind of ledger that outlives its process."""
    return _place(request, tmp_path)


@pytest.fixture
async def ledger(place: Place) -> AsyncIterator[Ledger]:
    opened = await place.open()
    try:
        yield opened
    finally:
        await opened.aclose()


def rows(count: int, *, start: int = 1, ids: Callable[[int], str | None] = str) -> list[Row]:
    return [(n, ids(n), REQUEST) for n in range(start, start + count)]


async def ingest(ledger: Ledger, items: list[Row], meta: dict[str, str] = META) -> list[str]:
    async with ledger.ingesting(meta, 20) as intake:
        for row in items:
            await intake.add(row)
    return intake.problems


def ready(line: int, task: str = "t") -> ItemResult:
    return ItemResult(line, "ready", task, TaskResult(data=f"result {line}"), None)


def failed(line: int) -> ItemResult:
    return ItemResult(line, "failed", None, None, ItemError(message="bad video", code="x"))


async def apply(
    ledger: Ledger, seq: int, results: list[ItemResult], *, max_attempts: int = 3
) -> int:
    return await ledger.apply_results(
        seq, f"b{seq}", results, batch_status="completed", max_attempts=max_attempts,
        canceling=False,
    )  # fmt: skip


async def end(ledger: Ledger, seq: int, *, status: str = "completed", attempts: int = 3) -> int:
    return await ledger.end_batch(
        seq, f"b{seq}", batch_status=status, max_attempts=attempts, canceling=False
    )


def small_state(ledger: Ledger) -> tuple[Any, ...]:
    """Every synchronous read of ``ledger``."""
    return (
        {k: ledger.meta(k) for k in ("input", "tag", "canceled", "k0", "k1")},
        ledger.counts(),
        ledger.totals(),
        [ledger.batch_count(s) for s in ("intent", "active", "ended")],
        ledger.active_batches(),
        ledger.known_batch_ids(),
        ledger.open_intents(),
    )


# -- intake -----------------------------------------------------------------------------


async def test_intake_stores_every_request_then_its_meta(ledger: Ledger) -> None:
    """A clean reading keeps every request waiting, in line order, and writes the meta."""
    assert await ingest(ledger, rows(INTAKE_CHUNK + 7)) == []
    assert ledger.meta("input") == "complete"
    assert ledger.meta("tag") == META["tag"]
    assert ledger.counts() == {"waiting": INTAKE_CHUNK + 7}
    assert ledger.totals() == (INTAKE_CHUNK + 7, 0, 0)
    intent = await ledger.new_intent(3)
    assert intent.lines == [1, 2, 3]
    assert intent.requests == [REQUEST] * 3


async def test_repeated_custom_ids_are_named_and_nothing_is_kept(ledger: Ledger) -> None:
    """Each repeated custom ID is named with the line that had it first, across chunks too,
    and a reading with a problem keeps no request and no meta; a clean one works after."""
    items = rows(INTAKE_CHUNK + 5, ids=lambda n: f"id-{n}")
    items[2] = (3, "id-1", REQUEST)
    items[INTAKE_CHUNK + 2] = (INTAKE_CHUNK + 3, "id-2", REQUEST)
    items[4] = (5, None, REQUEST)  # no custom ID is never a repeat
    items[5] = (6, None, REQUEST)
    assert await ingest(ledger, items) == [
        "line 3: custom_id 'id-1' repeats line 1",
        f"line {INTAKE_CHUNK + 3}: custom_id 'id-2' repeats line 2",
    ]
    assert ledger.meta("input") is None
    assert ledger.counts() == {}
    assert ledger.totals() == (0, 0, 0)
    assert await ledger.undelivered(10) == []
    assert await ingest(ledger, rows(4, ids=lambda n: f"id-{n}")) == []
    assert ledger.counts() == {"waiting": 4}


async def test_an_empty_input_is_a_problem(ledger: Ledger) -> None:
    """An input without a single request is refused, and no meta is written."""
    assert await ingest(ledger, []) == ["the input holds no requests"]
    assert ledger.meta("input") is None


async def test_an_exception_inside_the_intake_keeps_nothing(ledger: Ledger) -> None:
    """An exception raised while reading leaves no request and no meta behind."""
    with pytest.raises(RuntimeError, match="the input broke"):
        await read_then_break(ledger)
    assert ledger.meta("input") is None
    assert ledger.counts() == {}
    assert await ingest(ledger, rows(2)) == []
    assert ledger.counts() == {"waiting": 2}


async def read_then_break(ledger: Ledger) -> None:
    async with ledger.ingesting(META, 20) as intake:
        for row in rows(INTAKE_CHUNK + 3):
            await intake.add(row)
        raise RuntimeError("the input broke")


_CRASH = """
import asyncio, os, sys
from asyncbatch._jobs.ledger import INTAKE_CHUNK
from tests.test_jobs_ledger import Place, REQUEST, META

async def main():
    ledger = await Place(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]).open()
    async with ledger.ingesting(META, 20) as intake:
        for n in range(1, INTAKE_CHUNK + 11):
            await intake.add((n, f"id-{n}", REQUEST))
        os._exit(9)  # killed mid-reading: a chunk stored, the meta never written

asyncio.run(main())
"""


async def test_an_interrupted_intake_leaves_nothing(durable: Place) -> None:
    """A process killed while reading its input (a chunk stored, the meta not) leaves
    nothing that the next reading keeps: the same custom IDs are not repeats, and only the
    new requests count."""
    args = [durable.kind, str(durable.path), durable.url, durable.prefix]
    command = [sys.executable, "-c", _CRASH, *args]
    died = await anyio.to_thread.run_sync(
        lambda: subprocess.run(command, cwd=ROOT, check=False, capture_output=True)  # noqa: S603
    )
    assert died.returncode == 9, died.stderr.decode()
    ledger = await durable.open()
    try:
        assert ledger.meta("input") is None
        assert await ingest(ledger, rows(3, ids=lambda n: f"id-{n}")) == []
        assert ledger.counts() == {"waiting": 3}
        assert ledger.totals() == (3, 0, 0)
        assert (await ledger.new_intent(10)).lines == [1, 2, 3]
    finally:
        await ledger.aclose()


# -- intents and batches ----------------------------------------------------------------


async def test_new_intent_takes_the_first_waiting_lines_and_counts_them(ledger: Ledger) -> None:
    """Intents take waiting lines first lines first; counts and batches follow."""
    await ingest(ledger, rows(7))
    first, second = await ledger.new_intent(3), await ledger.new_intent(3)
    assert (first.seq, first.lines) == (1, [1, 2, 3])
    assert (second.seq, second.lines) == (2, [4, 5, 6])
    assert ledger.counts() == {"waiting": 1, "running": 6}
    assert ledger.open_intents() == [1, 2]
    assert ledger.batch_count("intent") == 2
    assert (await ledger.intent(2)).lines == [4, 5, 6]
    last = await ledger.new_intent(3)
    assert (last.seq, last.lines) == (3, [7])


async def test_void_intent_puts_its_requests_back_uncounted(ledger: Ledger) -> None:
    """A voided intent's requests wait again, no attempt counted, and its seq is free."""
    await ingest(ledger, rows(5))
    intent = await ledger.new_intent(3)
    await ledger.void_intent(intent.seq)
    assert ledger.counts() == {"waiting": 5}
    assert ledger.totals() == (5, 0, 0)
    assert ledger.open_intents() == []
    assert ledger.batch_count("intent") == 0
    assert (await ledger.intent(intent.seq)).lines == []
    again = await ledger.new_intent(4)
    assert (again.seq, again.lines) == (1, [1, 2, 3, 4])


async def test_created_makes_an_intent_an_active_batch(ledger: Ledger) -> None:
    """A created intent is an active batch, known by its ID, and no longer an open intent."""
    await ingest(ledger, rows(4))
    await ledger.new_intent(2)
    await ledger.new_intent(2)
    await ledger.created(1, "b1")
    assert ledger.active_batches() == {"b1": 1}
    assert ledger.known_batch_ids() == {"b1"}
    assert ledger.open_intents() == [2]
    assert [ledger.batch_count(s) for s in ("intent", "active", "ended")] == [1, 1, 0]


# -- results ----------------------------------------------------------------------------


async def test_applying_results_twice_changes_nothing(ledger: Ledger) -> None:
    """Results apply only to items still running in that batch: a second apply is a no-op."""
    await ingest(ledger, rows(3))
    await ledger.new_intent(3)
    await ledger.created(1, "b1")
    results = [ready(1), failed(2)]
    assert await apply(ledger, 1, results) == 2
    before = small_state(ledger), await ledger.undelivered(10)
    assert await apply(ledger, 1, results) == 0
    assert (small_state(ledger), await ledger.undelivered(10)) == before
    assert ledger.counts() == {"ready": 1, "waiting": 1, "running": 1}
    assert ledger.totals() == (3, 2, 0)


async def test_end_batch_settles_the_rest_as_missing(ledger: Ledger) -> None:
    """Ending a batch sends what its results did not name round again, and marks it ended;
    ending it again changes nothing."""
    await ingest(ledger, rows(3))
    await ledger.new_intent(3)
    await ledger.created(1, "b1")
    await apply(ledger, 1, [ready(1)])
    assert await end(ledger, 1) == 2
    assert ledger.counts() == {"ready": 1, "waiting": 2}
    assert ledger.active_batches() == {}
    assert ledger.batch_count("ended") == 1
    assert ledger.known_batch_ids() == {"b1"}
    assert await end(ledger, 1) == 0
    again = await ledger.new_intent(5)
    assert again.lines == [2, 3]


async def test_max_attempts_makes_the_last_failure_final(ledger: Ledger) -> None:
    """A request that fails in its last allowed attempt is final ``failed``, with its
    whole history."""
    await ingest(ledger, rows(1))
    for seq in (1, 2):
        intent = await ledger.new_intent(1)
        assert intent.seq == seq
        await ledger.created(seq, f"b{seq}")
        await apply(ledger, seq, [failed(1)], max_attempts=2)
        await end(ledger, seq, attempts=2)
    assert ledger.counts() == {"failed": 1}
    [outcome] = await ledger.undelivered(10)
    assert (outcome.status, outcome.attempts, outcome.batch_id) == ("failed", 2, "b2")
    assert [(a.number, a.batch_id, a.status) for a in outcome.history] == [
        (1, "b1", "failed"),
        (2, "b2", "failed"),
    ]
    assert outcome.error == ItemError(message="bad video", code="x")


async def test_refuse_fails_requests_but_keeps_ready_ones(ledger: Ledger) -> None:
    """Refused requests are final ``failed`` with one attempt counted; a ready one stays."""
    await ingest(ledger, rows(3))
    await ledger.new_intent(2)
    await ledger.created(1, "b1")
    await apply(ledger, 1, [ready(1)])
    refusal = ItemError(message="refused", code="bad_request")
    await ledger.refuse([1, 2, 3], refusal)
    assert ledger.counts() == {"ready": 1, "failed": 2}
    assert ledger.totals() == (3, 3, 0)
    outcomes = {o.line: o for o in await ledger.undelivered(10)}
    assert outcomes[1].status == "ready"
    assert outcomes[1].error is None
    assert outcomes[2].error == refusal
    assert outcomes[3].attempts == 1
    assert (await ledger.intent(1)).lines == []


async def test_a_request_refused_on_its_second_try_names_no_batch(ledger: Ledger) -> None:
    """A request that went round again and whose next create was refused ends ``failed``
    with both attempts counted, naming no batch (its intent never became one), and its
    history holds the one attempt that ran."""
    await ingest(ledger, rows(1))
    await ledger.new_intent(1)
    await ledger.created(1, "b1")
    await apply(ledger, 1, [failed(1)])
    await ledger.new_intent(1)
    await ledger.refuse([1], ItemError(message="refused", code="bad_request"))
    [outcome] = await ledger.undelivered(1)
    assert (outcome.status, outcome.attempts, outcome.batch_id) == ("failed", 2, None)
    assert [a.batch_id for a in outcome.history] == ["b1"]


async def test_cancel_waiting_cancels_only_waiting_requests(ledger: Ledger) -> None:
    """Waiting requests end ``canceled`` (job canceled); running ones are left to their batch."""
    await ingest(ledger, rows(5))
    await ledger.new_intent(2)
    assert await ledger.cancel_waiting() == 3
    assert ledger.counts() == {"running": 2, "canceled": 3}
    assert await ledger.cancel_waiting() == 0
    [first, *_] = await ledger.undelivered(10)
    assert first.line == 3
    assert first.error is not None
    assert first.error.code == "job_canceled"


# -- delivery ---------------------------------------------------------------------------


async def test_undelivered_acknowledge_and_redeliver_all_but(ledger: Ledger) -> None:
    """Final outcomes come first lines first up to the limit; acknowledged ones no more;
    redeliver_all_but makes every other final outcome undelivered again."""
    await ingest(ledger, rows(6))
    await ledger.new_intent(6)
    await ledger.created(1, "b1")
    await apply(ledger, 1, [ready(n) for n in (5, 1, 3, 2)])
    assert [o.line for o in await ledger.undelivered(3)] == [1, 2, 3]
    await ledger.acknowledge(2)
    await ledger.acknowledge(1)
    assert [o.line for o in await ledger.undelivered(10)] == [3, 5]
    assert ledger.totals()[2] == 2
    await ledger.redeliver_all_but([3])
    assert [o.line for o in await ledger.undelivered(10)] == [1, 2, 5]
    assert ledger.totals()[2] == 1


async def test_an_outcome_carries_its_history(ledger: Ledger) -> None:
    """An outcome holds every attempt, oldest first, with each batch, task and error."""
    await ingest(ledger, rows(1, ids=lambda n: "only"))
    await ledger.new_intent(1)
    await ledger.created(1, "b1")
    await ledger.end_batch(1, "b1", batch_status="expired", max_attempts=3, canceling=False)
    await ledger.new_intent(1)
    await ledger.created(2, "b2")
    await apply(ledger, 2, [ready(1, task="task-2")])
    [outcome] = await ledger.undelivered(1)
    assert (outcome.custom_id, outcome.status, outcome.attempts) == ("only", "ready", 2)
    assert (outcome.batch_id, outcome.task_id) == ("b2", "task-2")
    assert outcome.data == TaskResult(data="result 1")
    [lost, won] = outcome.history
    assert (lost.number, lost.batch_id, lost.status) == (1, "b1", "missing")
    assert lost.error == ItemError(message="left missing when batch ended expired")
    assert (won.number, won.batch_id, won.status, won.task_id) == (2, "b2", "ready", "task-2")


async def test_a_reopened_ledger_answers_the_same(durable: Place) -> None:
    """Counts, totals, batches, meta and outcomes are the same after reopening a file or a
    Redis prefix."""
    ledger = await durable.open()
    await ingest(ledger, rows(6))
    await ledger.set_meta({"canceled": "1"})
    for _ in range(3):
        await ledger.new_intent(2)
    await ledger.created(1, "b1")
    await ledger.created(2, "b2")
    await apply(ledger, 1, [ready(1), failed(2)], max_attempts=1)
    await end(ledger, 1)
    await ledger.acknowledge(1)
    before = small_state(ledger), await ledger.undelivered(10)
    await ledger.aclose()
    again = await durable.open()
    try:
        assert (small_state(again), await again.undelivered(10)) == before
        assert again.open_intents() == [3]
        assert again.active_batches() == {"b2": 2}
    finally:
        await again.aclose()


# -- Redis specifics --------------------------------------------------------------------


async def test_redis_ledger_from_a_state_url(redis_url: str) -> None:
    """``redis://...?prefix=P`` opens a RedisLedger on P, which owns (and closes) its
    client; its repr names the server and prefix, never the password."""
    prefix = fresh_prefix()
    url = job_state(redis_url.replace("redis://", "redis://user:s3cret@"), prefix)
    with pytest.raises(StateStoreError):  # the test server has no such user
        await open_ledger(url)
    ledger = await open_ledger(job_state(redis_url, prefix))
    await ingest(ledger, rows(2))
    assert "127.0.0.1" in repr(ledger)
    assert prefix in repr(ledger)
    await ledger.aclose()
    await ledger.aclose()  # idempotent
    async with redis_client(redis_url) as client:
        assert await client.hget(f"{prefix}job:meta", "input") == b"complete"
        async with Redis(host="127.0.0.1", port=1, password="s3cret") as passworded:
            assert "s3cret" not in repr(
                RedisLedger(passworded, prefix=prefix, owns_client=False, claim=False)
            )


async def test_redis_failures_are_state_store_errors() -> None:
    """A Redis server out of reach is a StateStoreError, at open and on a write."""
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=None)
    with pytest.raises(StateStoreError):
        await RedisLedger.open(unreachable, prefix=fresh_prefix(), owns_client=True)
    with redis_server() as url:
        ledger = await RedisLedger.open(redis_client(url), prefix=fresh_prefix(), owns_client=True)
    try:  # the server is gone now
        with pytest.raises(StateStoreError):
            await ledger.acknowledge(1)
    finally:
        await ledger.aclose()


async def test_a_corrupt_stored_value_is_a_decode_error(redis_url: str) -> None:
    """A stored result, attempt or attempt count that is not what the ledger wrote raises a
    typed DecodeError, never a raw exception."""
    prefix = fresh_prefix()
    async with redis_client(redis_url) as client:
        ledger = await RedisLedger.open(client, prefix=prefix)
        await ingest(ledger, rows(3))
        await ledger.new_intent(3)
        await ledger.created(1, "b1")
        await apply(ledger, 1, [ready(1), ready(2), ready(3)])
        await client.hset(f"{prefix}job:i:1", "d", b"{not json")
        await client.hset(f"{prefix}job:h:2", "1", b"[1,2")
        await client.hset(f"{prefix}job:i:3", "a", b"many")
        for corrupt in (1, 2, 3):
            await ledger.redeliver_all_but(n for n in (1, 2, 3) if n != corrupt)
            with pytest.raises(DecodeError):
                await ledger.undelivered(1)


async def test_clearing_leaves_other_prefixes_alone(redis_url: str) -> None:
    """A failed reading unlinks its own job's keys only, not those of a job whose prefix
    starts with its own, nor keys with glob characters."""
    base = fresh_prefix()
    async with redis_client(redis_url) as client:
        other = await RedisLedger.open(client, prefix=f"{base}job:x")
        await ingest(other, rows(2))
        starred = await RedisLedger.open(client, prefix=f"{base}*")
        assert await ingest(starred, []) == ["the input holds no requests"]
        mine = await RedisLedger.open(client, prefix=base)
        assert await ingest(mine, [(1, "a", REQUEST), (2, "a", REQUEST)]) != []
        await mine.aclose()  # its claim goes with it
        reopened = await RedisLedger.open(client, prefix=f"{base}job:x", claim=False)
        assert reopened.counts() == {"waiting": 2}
        assert [k async for k in client.scan_iter(match=f"{base}job:[^x]*")] == []


# -- a job end to end on Redis state ---------------------------------------------------------

KEY = "ledger-key"
PROMPT = {"prompt": {"input_text": "Describe the video."}}
FAST = PollPolicy(min_interval=5.0, max_interval=30.0, stagger=0.0)


def job_state(url: str, prefix: str) -> str:
    """A Redis job state URL without redis-py's 5 s socket timeout (a timer the virtual
    clock may jump to while a script runs)."""
    return f"{url}?prefix={prefix}&socket_timeout=1e6&socket_connect_timeout=1e6"


def video_requests(count: int) -> list[dict[str, Any]]:
    return [{"video": {"asset_id": f"asset-{i}"}, "custom_id": f"r{i}"} for i in range(count)]


async def test_a_job_on_redis_state_resumes_and_delivers_each_request_once(redis_url: str) -> None:
    """A job on ``redis://...?prefix=P``, left after some outcomes were acknowledged and
    entered again on P, delivers every request exactly once over both runs, sends none
    twice, and leaves its whole record in Redis under P."""
    prefix = fresh_prefix()
    state = job_state(redis_url, prefix)
    options: dict[str, Any] = {"defaults": PROMPT, "poll": FAST, "state": state, "auto_ack": False}
    async with (
        Simulator(api_key=KEY, seed=5) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        first: list[JobOutcome] = []
        async with client.jobs.run(video_requests(120), max_batch_size=25, **options) as job:
            async for outcome in job:
                first.append(outcome)
                await job.ack(outcome)
                if len(first) == 30:
                    break
        async with client.jobs.run(video_requests(120), max_batch_size=25, **options) as job:
            second = []
            async for outcome in job:
                second.append(outcome)
                await job.ack(outcome)
            statistics = job.statistics()
        # A job sends each request as TAG-SEQ-LINE: count the lines the simulator received.
        sent = Counter(
            int(r["custom_id"].rsplit("-", 1)[1]) for b in sim.batch_ids() for r in sim.results(b)
        )
    lines = sorted(o.line for o in first + second)
    assert lines == list(range(1, 121))
    assert {o.custom_id for o in first + second} == {f"r{i}" for i in range(120)}
    assert (statistics.total, statistics.delivered, statistics.finished) == (120, 120, 120)
    assert sent == dict.fromkeys(range(1, 121), 1)  # none sent again after the resume
    async with redis_client(redis_url) as redis:
        assert await redis.hget(f"{prefix}job:meta", "input") == b"complete"
        assert await redis.zcard(f"{prefix}job:dlv") == 120


async def test_a_canceled_job_on_redis_state_ends_every_request_once(redis_url: str) -> None:
    """Canceling a job on Redis state ends each request once, ``ready`` or ``canceled``, and
    a job entered again on the same prefix delivers nothing more."""
    state = job_state(redis_url, fresh_prefix())
    options: dict[str, Any] = {"defaults": PROMPT, "poll": FAST, "state": state}
    async with (
        Simulator(api_key=KEY, seed=6, item_seconds=60.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        outcomes = []
        async with client.jobs.run(video_requests(80), max_batch_size=10, **options) as job:
            async for outcome in job:
                outcomes.append(outcome)
                if len(outcomes) == 1:
                    await job.cancel()
        async with client.jobs.run(video_requests(80), **options) as again:
            more = [o async for o in again]
    assert sorted(o.line for o in outcomes) == list(range(1, 81))
    assert {str(o.status) for o in outcomes} <= {"ready", "canceled"}
    assert any(o.status == "canceled" for o in outcomes)
    assert more == []


def test_ledger_overhead_benchmark_measures_each_ledger_and_cleans_up(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks.ledger_overhead runs at tiny sizes, measures every ledger, leaves no keys."""
    rows = ledger_overhead.main(
        ["--chunk", "4", "--chunks", "2", "--acks", "3", "--repeats", "1", "--redis", redis_url]
    )
    assert [row[0] for row in rows] == ["sqlite FULL", "sqlite NORMAL", "redis"]
    assert all(float(figure) > 0 for row in rows for figure in row[1:])
    assert "| ledger" in capsys.readouterr().out

    async def leftover() -> list[bytes]:
        async with redis_client(redis_url) as client:
            return [key async for key in client.scan_iter(match="asyncbatch-bench:*")]

    assert anyio.run(leftover) == []


# -- model-based: SQLite and Redis side by side -------------------------------------------

# Seqs and result lines are drawn as picks, resolved against the reference as the run goes
# (`Scene`), so that operations mostly reach batches and items that exist; a pick past the
# known ones names a seq or line as it is, which may exist or not.
PICKS = st.integers(0, 6)
LINES = st.integers(1, 9)
STATUSES = st.sampled_from(["ready", "ready", "failed", "canceled", "running", "missing"])
BATCH_STATUSES = st.sampled_from(["completed", "canceled", "expired", "failed"])
ERRORS = st.none() | st.builds(ItemError, message=st.sampled_from(["x", "é"]), code=st.none())
RESULTS = st.tuples(
    PICKS,
    STATUSES,
    st.none() | st.sampled_from(["", "t1", "t2"]),
    st.none() | st.builds(TaskResult, data=st.sampled_from(["", "{}", "ok"])),
    ERRORS,
)
SETTLING = st.fixed_dictionaries(
    {"batch_status": BATCH_STATUSES, "max_attempts": st.integers(1, 3), "canceling": st.booleans()}
)
OPERATIONS = st.one_of(
    st.tuples(st.just("new_intent"), st.integers(0, 4)),
    st.tuples(st.just("created"), PICKS),
    st.tuples(st.just("void_intent"), PICKS),
    st.tuples(st.just("apply_results"), PICKS, st.lists(RESULTS, max_size=4), SETTLING),
    st.tuples(st.just("end_batch"), PICKS, SETTLING),
    st.tuples(st.just("refuse"), st.lists(LINES, max_size=3)),
    st.tuples(st.just("cancel_waiting")),
    st.tuples(st.just("acknowledge"), LINES),
    st.tuples(st.just("redeliver_all_but"), st.lists(LINES, max_size=4)),
    st.tuples(st.just("set_meta"), st.sampled_from(["k0", "k1"]), st.sampled_from(["", "v"])),
)
INPUTS = st.lists(st.booleans(), min_size=2, max_size=8)  # whether each line has a custom ID


@dataclass
class Scene:
    """What the run has made so far, to resolve picks: the seqs of its intents."""

    reference: Ledger
    seqs: list[int]

    def seq(self, pick: int) -> int:
        """A recent intent's seq for a small pick, else the pick as a seq."""
        return self.seqs[-1 - pick] if pick < min(len(self.seqs), 4) else pick

    async def results(self, seq: int, drawn: list[tuple[Any, ...]]) -> list[ItemResult]:
        """Results naming mostly the items running in ``seq``."""
        running = (await self.reference.intent(seq)).lines
        return [
            ItemResult(running[pick % len(running)] if running and pick < 5 else pick, *rest)
            for pick, *rest in drawn
        ]

    async def resolve(self, op: tuple[Any, ...], step: int) -> tuple[str, list[Any]]:
        """The call ``op`` stands for: a method's name and its arguments."""
        name, *args = op
        if name in ("created", "void_intent", "apply_results", "end_batch"):
            args[0] = self.seq(args[0])
        if name == "created":
            args.append(f"batch-{step}")  # every batch ID unique, as the API's are
        if name in ("apply_results", "end_batch"):
            args.insert(1, f"b{args[0]}")
        if name == "apply_results":
            args[2] = await self.results(args[0], args[2])
        if name == "refuse":
            args.append(ItemError(message="refused", code="r"))
        if name == "set_meta":
            args = [{args[0]: args[1]}]
        return name, args


async def play(ledger: Ledger, name: str, args: list[Any]) -> object:
    """Call ``name`` on ``ledger`` with ``args`` (settling options as keywords)."""
    *positional, last = args or [None]
    if isinstance(last, dict) and "batch_status" in last:
        return await getattr(ledger, name)(*positional, **last)
    return await getattr(ledger, name)(*args)


async def every_read(ledger: Ledger) -> tuple[Any, ...]:
    """Everything ``ledger`` answers: the small state, outcomes and every intent."""
    intents = [(await ledger.intent(seq)) for seq in range(1, 7)]
    return small_state(ledger), await ledger.undelivered(100), await ledger.undelivered(2), intents


async def side_by_side(url: str, with_ids: list[bool], ops: list[tuple[Any, ...]]) -> None:
    reference = SQLiteLedger(":memory:")
    prefix = fresh_prefix()
    client = redis_client(url)
    tested = await RedisLedger.open(client, prefix=prefix)
    try:
        items = [
            (n, f"id-{n}" if has else None, b'{"n":%d}' % n) for n, has in enumerate(with_ids, 1)
        ]
        assert await ingest(tested, items) == await ingest(reference, items)
        scene = Scene(reference, [])
        for step, op in enumerate(ops):
            name, args = await scene.resolve(op, step)
            answer = await play(reference, name, args)
            assert await play(tested, name, args) == answer, (name, args)
            if isinstance(answer, Intent):
                scene.seqs.append(answer.seq)
            expected = await every_read(reference)
            assert await every_read(tested) == expected, (name, args)
            reopened = await RedisLedger.open(client, prefix=prefix, claim=False)
            assert await every_read(reopened) == expected, (name, args)
    finally:
        await reference.aclose()
        await client.aclose()


@settings(
    max_examples=int(_LONG_RUN or 40),
    derandomize=_LONG_RUN is None,  # the short run is the same every time: it never flakes
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(with_ids=INPUTS, ops=st.lists(OPERATIONS, min_size=20, max_size=40))
def test_redis_ledger_answers_as_sqlite_does(
    redis_url: str, with_ids: list[bool], ops: list[tuple[Any, ...]]
) -> None:
    """Driven by the same random operations, RedisLedger and SQLiteLedger return the same,
    and after every step every read (small state, outcomes with their history, intents)
    answers the same, in the live RedisLedger and in one reopened on its prefix."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(side_by_side(redis_url, with_ids, ops))


async def test_a_sqlite_state_is_carried_by_one_process_at_a_time(tmp_path: Path) -> None:
    """A second ledger on a SQLite file that is open is refused with `StateStoreError` (two
    processes would each deliver every outcome); once the first is closed it opens."""
    path = tmp_path / "job.db"
    first = SQLiteLedger(path)
    with pytest.raises(StateStoreError, match="in use by another process"):
        SQLiteLedger(path)
    await first.aclose()
    second = SQLiteLedger(path)
    await second.aclose()


# -- one process at a time on Redis ------------------------------------------------------------

HOST = socket.gethostname()


async def test_a_redis_state_is_carried_by_one_process_at_a_time(redis_url: str) -> None:
    """A second ledger on a Redis prefix whose job is open is refused with `StateStoreError`
    naming the holder; once the first is closed it opens."""
    prefix = fresh_prefix()
    async with redis_client(redis_url) as client:
        first = await RedisLedger.open(client, prefix=prefix)
        with pytest.raises(StateStoreError, match=f"in use by another process .{HOST} "):
            await RedisLedger.open(client, prefix=prefix)
        await first.aclose()
        second = await RedisLedger.open(client, prefix=prefix)
        await second.aclose()
        assert await client.exists(f"{prefix}job:owner") == 0


async def test_the_claim_of_a_run_that_ended_on_this_host_is_taken_over_at_once(
    redis_url: str,
) -> None:
    """A claim left by a process of this host that is gone (a SIGKILLed run) does not block the
    next run; one from another host does, until it lapses, and so does a key holding bytes
    that are not text (shown in the error, never a decoding crash)."""
    async with await anyio.open_process([sys.executable, "-c", "pass"]) as ended:
        await ended.wait()
    prefix = fresh_prefix()
    async with redis_client(redis_url) as client:
        await client.set(f"{prefix}job:owner", f"{HOST} {ended.pid} dead", px=600_000)
        ledger = await RedisLedger.open(client, prefix=prefix)
        await ledger.aclose()
        await client.set(f"{prefix}job:owner", "elsewhere 1 alive", px=600_000)
        with pytest.raises(StateStoreError, match="elsewhere 1 alive"):
            await RedisLedger.open(client, prefix=prefix)
        await client.set(f"{prefix}job:owner", b"\xff\xfe not text")
        with pytest.raises(StateStoreError, match="not text"):
            await RedisLedger.open(client, prefix=prefix)


async def test_a_held_claim_is_renewed_and_a_lost_one_stops_the_holder(redis_url: str) -> None:
    """`hold` renews the claim every third of its lifetime (on the loop's clock), and raises
    `StateStoreError` once another process has taken the job over."""
    prefix = fresh_prefix()
    async with redis_client(redis_url) as client:
        ledger = await RedisLedger.open(client, prefix=prefix)
        try:
            await client.pexpire(f"{prefix}job:owner", 5_000)
            with anyio.move_on_after(CLAIM_SECONDS / 3 + 1):
                await ledger.hold()
            assert await client.pttl(f"{prefix}job:owner") > 5_000  # renewed
            await client.set(f"{prefix}job:owner", "elsewhere 1 taken")
            with pytest.raises(StateStoreError, match="lost"):
                await ledger.hold()
        finally:
            await ledger.aclose()
        assert await client.get(f"{prefix}job:owner") == b"elsewhere 1 taken"  # not ours to free


def test_a_killed_run_not_yet_reaped_counts_as_ended() -> None:
    """A run killed by a supervisor that has not yet waited for it (a zombie: it still answers
    ``kill(pid, 0)``) gives its claim up like one that is gone."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to tell a zombie")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not _gone(f"{HOST} {child.pid} alive")
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, left unreaped
        assert _gone(f"{HOST} {child.pid} zombie")
        assert not _gone(f"elsewhere {child.pid} zombie")
    finally:
        child.kill()
        child.wait()
