"""Microseconds a job's ledger adds per delivered outcome and per chunk of results.

Run: ``.venv/bin/python -m benchmarks.ledger_overhead`` (``--help`` for sizes).

What a job pays its ledger, besides the API:

* ``acknowledge``: once per outcome handed to the caller (on record when it returns);
* ``apply_results``: once per chunk of ``--chunk`` results streamed from an ended batch
  (each result ready, with a small analysis), settling that many items in one write.

Ledgers: `SQLiteLedger` (``synchronous`` FULL and NORMAL, in a temporary directory) and
`RedisLedger`: ``--redis URL``, or a throwaway ``redis-server`` on loopback when one is
installed. Contenders are measured side by side: every repeat measures each in turn. Each
figure is the median over ``--repeats`` of the mean time per call, on a plain asyncio loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import anyio
from redis.asyncio import Redis

from asyncbatch._jobs.ledger import ItemResult, Ledger
from asyncbatch._jobs.redis_ledger import RedisLedger
from asyncbatch._jobs.sqlite_ledger import SQLiteLedger
from asyncbatch._models import TaskResult

from ._report import machine_line, median, table
from .store_overhead import redis_url

REQUEST = b'{"video":{"type":"asset_id","asset_id":"asset-0000000000"}}'
ANALYSIS = TaskResult(data="Simulated analysis of the video. " * 8, generation_id="gen-1")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_overhead")
    parser.add_argument("--chunk", type=int, default=200, help="results per apply_results")
    parser.add_argument("--chunks", type=int, default=10, help="apply_results calls per repeat")
    parser.add_argument("--acks", type=int, default=500, help="acknowledge calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--redis", help="redis://HOST:PORT/DB (default: start redis-server)")
    return parser.parse_args(argv)


class Contender:
    """One ledger, filled with enough requests for every repeat, and where it stands."""

    def __init__(self, name: str, ledger: Ledger) -> None:
        self.name = name
        self.ledger = ledger
        self.settled: list[int] = []  # lines made final, not yet acknowledged

    async def fill(self, count: int) -> None:
        async with self.ledger.ingesting({"input": "complete"}, 20) as intake:
            for line in range(1, count + 1):
                await intake.add((line, f"req-{line}", REQUEST))

    async def apply_chunks(self, args: argparse.Namespace) -> float:
        """Mean seconds per apply_results of ``--chunk`` ready results (intents made and
        recorded as created beforehand, untimed)."""
        batches = []
        for _ in range(args.chunks):
            intent = await self.ledger.new_intent(args.chunk)
            batch_id = f"batch-{intent.seq}"
            await self.ledger.created(intent.seq, batch_id)
            results = [ItemResult(n, "ready", f"task-{n}", ANALYSIS, None) for n in intent.lines]
            batches.append((intent.seq, batch_id, results))
        started = time.perf_counter()
        for seq, batch_id, results in batches:
            await self.ledger.apply_results(
                seq, batch_id, results, batch_status="completed", max_attempts=3, canceling=False
            )
        elapsed = time.perf_counter() - started
        self.settled += [r.line for _, _, results in batches for r in results]
        return elapsed / int(args.chunks)

    async def acknowledge(self, args: argparse.Namespace) -> float:
        """Mean seconds per acknowledge of an outcome made final before."""
        lines, self.settled = self.settled[: args.acks], self.settled[args.acks :]
        started = time.perf_counter()
        for line in lines:
            await self.ledger.acknowledge(line)
        return (time.perf_counter() - started) / max(1, len(lines))


async def run(args: argparse.Namespace, workdir: Path, url: str | None) -> list[list[str]]:
    needed = args.repeats * args.chunks * args.chunk
    contenders = [
        Contender("sqlite FULL", SQLiteLedger(workdir / "full.db", synchronous="FULL")),
        Contender("sqlite NORMAL", SQLiteLedger(workdir / "normal.db", synchronous="NORMAL")),
    ]
    # Keys of its own, deleted after: the server may be someone's real one.
    prefix = f"asyncbatch-bench:{uuid.uuid4().hex}:"
    client = None if url is None else Redis.from_url(url, socket_timeout=None)
    if client is not None:
        contenders.append(Contender("redis", await RedisLedger.open(client, prefix=prefix)))
    try:
        for contender in contenders:
            await contender.fill(needed)
        applied: dict[str, list[float]] = {c.name: [] for c in contenders}
        acked: dict[str, list[float]] = {c.name: [] for c in contenders}
        for _ in range(args.repeats):
            for contender in contenders:
                applied[contender.name].append(await contender.apply_chunks(args))
                acked[contender.name].append(await contender.acknowledge(args))
    finally:
        for contender in contenders:
            await contender.ledger.aclose()
        if client is not None:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            for start in range(0, len(keys), 1000):
                await client.unlink(*keys[start : start + 1000])
            await client.aclose()
    return [
        [c.name, f"{median(acked[c.name]) * 1e6:.1f}", f"{median(applied[c.name]) * 1e6:.0f}"]
        for c in contenders
    ]


def main(argv: Sequence[str] | None = None) -> list[list[str]]:
    args = parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncbatch-")))
        url = stack.enter_context(redis_url(args.redis))
        rows = anyio.run(run, args, workdir, url)
    print(machine_line())
    print(
        f"median of {args.repeats} repeats; {args.acks} acknowledgements and "
        f"{args.chunks} apply_results of {args.chunk} results per repeat"
    )
    if url is None:
        print("redis: not measured (no --redis and no redis-server installed)")
    headers = ["ledger", "µs per acknowledge", f"µs per apply_results of {args.chunk}"]
    print(table("Job ledger overhead", headers, rows))
    return rows


if __name__ == "__main__":
    main()
