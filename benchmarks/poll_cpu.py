"""Client CPU time per status poll: asyncbatch against raw aiohttp and the official SDK.

Run: ``.venv/bin/python -m benchmarks.poll_cpu`` (``--help`` for sizes).

A canned-status server runs in its own process (`benchmarks._server`); every
contender polls ``GET /v1.3/analyze/batches/{id}`` from this process through
``concurrency`` worker tasks, back to back, until this process has spent a CPU
budget (user + sys, `time.process_time`), and we divide the CPU time by the
number of polls. A budget rather than a poll count gives the cheap and the
costly contenders the same statistical weight and bounds the run time.
Contenders run one after another inside each repeat, so a drift of the
machine hits all of them alike; the tables show the median over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import httpx
import twelvelabs
from prometheus_client import CollectorRegistry

from asyncbatch import Client, PrometheusHooks, WatchOptions, set_telemetry_hooks
from asyncbatch._models import batch_decoder

from ._bodies import BATCH_ID
from ._report import machine_line, median, table
from ._server import SWEEP_IDS, serve_in_subprocess

API_KEY = "bench-key-not-secret"
PollFn = Callable[[str], Awaitable[object]]
Opener = Callable[[str], AbstractAsyncContextManager[PollFn]]

CLIENT = "asyncbatch Client"
RAW_MSGSPEC = "raw aiohttp + msgspec"
RAW_JSON = "raw aiohttp + json"
SDK = "twelvelabs AsyncTwelveLabs"
WATCHER = "asyncbatch Watcher (per-ID)"
SWEEPER = "asyncbatch Watcher (sweep), per batch"
PROM_CLIENT = "asyncbatch Client, Prometheus hooks"
PROM_WATCHER = "asyncbatch Watcher (per-ID), Prometheus hooks"


@asynccontextmanager
async def _asyncbatch_client(base_url: str) -> AsyncIterator[PollFn]:
    async with Client(api_key=API_KEY, base_url=base_url) as client:
        yield client.batches.retrieve


@asynccontextmanager
async def _raw_aiohttp(base_url: str, decode: Callable[[bytes], object]) -> AsyncIterator[PollFn]:
    # The floor: one default session, the auth header, a status check, a decode.
    headers = {"x-api-key": API_KEY}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def poll(batch_id: str) -> object:
            async with session.get(f"{base_url}/analyze/batches/{batch_id}") as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
            return decode(body)

        yield poll


def _raw_msgspec(base_url: str) -> AbstractAsyncContextManager[PollFn]:
    return _raw_aiohttp(base_url, batch_decoder.decode)


def _raw_json(base_url: str) -> AbstractAsyncContextManager[PollFn]:
    return _raw_aiohttp(base_url, json.loads)


@asynccontextmanager
async def _sdk(base_url: str) -> AsyncIterator[PollFn]:
    # The same httpx client the SDK builds by default (600 s timeout), passed in
    # so that we can close it: the SDK itself never does.
    async with httpx.AsyncClient(timeout=600.0) as http:
        # AsyncTwelveLabs prefers $TWELVELABS_BASE_URL over its base_url argument:
        # hide it while the client is built, or the SDK would poll somewhere else.
        saved = os.environ.pop("TWELVELABS_BASE_URL", None)
        try:
            sdk = twelvelabs.AsyncTwelveLabs(api_key=API_KEY, base_url=base_url, httpx_client=http)
        finally:
            if saved is not None:
                os.environ["TWELVELABS_BASE_URL"] = saved
        yield sdk.analyze_async.batches.retrieve


async def _poll_until(poll: PollFn, concurrency: int, cpu_stop: float) -> int:
    """Poll from ``concurrency`` workers until `time.process_time` passes ``cpu_stop``.

    Each worker polls at least once. Returns the number of polls.
    """
    polls = 0

    async def worker() -> None:
        nonlocal polls
        while True:
            await poll(BATCH_ID)
            polls += 1
            if time.process_time() >= cpu_stop:
                return

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return polls


@dataclass(frozen=True)
class Cell:
    """One measurement: CPU and wall seconds per poll, and how many polls it took."""

    cpu: float
    wall: float
    polls: int


Measure = Callable[[str, int, float], Awaitable[Cell]]


def _calls(opener: Opener) -> Measure:
    """Measures a contender that is called once per poll, from ``concurrency`` workers."""

    async def measure(base_url: str, concurrency: int, cpu_budget: float) -> Cell:
        async with opener(base_url) as poll:
            await _poll_until(poll, concurrency, 0.0)  # warm-up: one poll a worker opens the pool
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            polls = await _poll_until(poll, concurrency, cpu + cpu_budget)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return Cell(cpu / polls, wall / polls, polls)

    return measure


_WATCHED_PER_SLOT = 2  # more batches than slots, so that every slot always has work
_MONITOR_PERIOD = 0.01  # seconds between checks of the CPU budget (about 0.1% of a core)


async def _measure_watcher(base_url: str, concurrency: int, cpu_budget: float) -> Cell:
    """The watcher polling ``2 * concurrency`` batches back to back, ``concurrency`` at once.

    The intervals are a microsecond and jitter is off, so every batch is due
    again as soon as its answer is in: the watcher polls as fast as its
    ``max_concurrency`` lets it, like the workers of the other contenders.
    The answer never changes, so after one ``seen`` per batch no event flows
    and what is measured is the poll loop itself (schedule, request, decode,
    diff).
    """
    ids = [f"{n:024x}" for n in range(_WATCHED_PER_SLOT * concurrency)]
    options: WatchOptions = {
        "min_interval": 1e-6,
        "max_interval": 1e-6,
        "jitter": 0.0,
        "stagger": 0.0,
        "max_concurrency": concurrency,
        "strategy": "per_id",
        "stop_when_done": False,
    }
    async with (
        Client(api_key=API_KEY, base_url=base_url) as client,
        client.watch(ids, **options) as watcher,
        asyncio.TaskGroup() as group,
    ):
        drain = group.create_task(_drain(watcher))
        target = 2 * len(ids)
        await _wait_until(lambda: watcher.statistics().polls >= target, drain)  # every batch seen
        gc.collect()
        polls, cpu, wall = watcher.statistics().polls, time.process_time(), time.perf_counter()
        await _wait_until(lambda: time.process_time() >= cpu + cpu_budget, drain)
        polls = watcher.statistics().polls - polls
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        drain.cancel()
        if watcher.statistics().sweeps:  # a sweep's CPU would count, its batches would not
            raise RuntimeError("the per-ID watcher swept: check its options")
    return Cell(cpu / polls, wall / polls, polls)


async def _measure_sweep(base_url: str, concurrency: int, cpu_budget: float) -> Cell:
    """The watcher refreshing the five batches of every list answer by sweep, back to back.

    Each sweep is one ``GET /analyze/batches`` whose page holds all five; the
    safety-net GET of each batch (every `VERIFY_INTERVALS` max intervals, here
    microseconds) runs too, and is counted, so the figure is CPU per batch
    snapshot refreshed by either: (5 x sweeps + GETs). ``concurrency`` bounds
    those GETs; a sweep is one request at a time.
    """
    options: WatchOptions = {
        "min_interval": 1e-6,
        "max_interval": 1e-6,
        "jitter": 0.0,
        "stagger": 0.0,
        "max_concurrency": concurrency,
        "strategy": "sweep",
        "stop_when_done": False,
    }

    def refreshed() -> int:
        stats = watcher.statistics()
        return len(SWEEP_IDS) * stats.sweeps + stats.polls

    async with (
        Client(api_key=API_KEY, base_url=base_url) as client,
        client.watch(SWEEP_IDS, **options) as watcher,
        asyncio.TaskGroup() as group,
    ):
        drain = group.create_task(_drain(watcher))
        await _wait_until(lambda: watcher.statistics().sweeps >= 2, drain)
        gc.collect()
        count, cpu, wall = refreshed(), time.process_time(), time.perf_counter()
        await _wait_until(lambda: time.process_time() >= cpu + cpu_budget, drain)
        count = refreshed() - count
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        drain.cancel()
    return Cell(cpu / count, wall / count, count)


async def _drain(watcher: AsyncIterator[object]) -> None:
    async for _ in watcher:
        pass
    raise RuntimeError("the watcher stopped iterating while batches were open")


async def _wait_until(condition: Callable[[], bool], drain: asyncio.Task[None]) -> None:
    """Check ``condition`` every few ms; a watcher that fails meanwhile raises here."""
    # Polling is deliberate: the watcher exposes counters, not events to wait on.
    while not condition():
        if drain.done():
            await drain
        await asyncio.sleep(_MONITOR_PERIOD)


def _with_prometheus(measure: Measure) -> Measure:
    """``measure`` with `PrometheusHooks` installed (on a registry of its own) while it runs."""

    async def measured(base_url: str, concurrency: int, cpu_budget: float) -> Cell:
        set_telemetry_hooks(PrometheusHooks(CollectorRegistry()))
        try:
            return await measure(base_url, concurrency, cpu_budget)
        finally:
            set_telemetry_hooks()

    return measured


CONTENDERS: dict[str, Measure] = {
    CLIENT: _calls(_asyncbatch_client),
    RAW_MSGSPEC: _calls(_raw_msgspec),
    RAW_JSON: _calls(_raw_json),
    SDK: _calls(_sdk),
    WATCHER: _measure_watcher,
    SWEEPER: _measure_sweep,
    PROM_CLIENT: _with_prometheus(_calls(_asyncbatch_client)),
    PROM_WATCHER: _with_prometheus(_measure_watcher),
}


@dataclass
class Results:
    """Every repeat of every (contender, concurrency) cell."""

    cells: dict[tuple[str, int], list[Cell]] = field(default_factory=dict)

    def add(self, name: str, concurrency: int, cell: Cell) -> None:
        self.cells.setdefault((name, concurrency), []).append(cell)

    def cpu_us(self, name: str, concurrency: int) -> float:
        """Median CPU microseconds per poll."""
        return median(c.cpu for c in self.cells[(name, concurrency)]) * 1e6

    def best_cpu_us(self, name: str, concurrency: int) -> float:
        """The least CPU microseconds per poll of any repeat: noise only ever adds."""
        return min(c.cpu for c in self.cells[(name, concurrency)]) * 1e6

    def polls_per_s(self, name: str, concurrency: int) -> float:
        """Median polls per wall second."""
        return 1 / median(c.wall for c in self.cells[(name, concurrency)])

    def polls(self, name: str, concurrency: int) -> int:
        """Polls measured over every repeat."""
        return sum(c.polls for c in self.cells[(name, concurrency)])

    def paired_ratios(self, numerator: str, denominator: str, concurrency: int) -> list[float]:
        """CPU ratio of two contenders within each repeat, where they ran back to back."""
        tops, bottoms = self.cells[(numerator, concurrency)], self.cells[(denominator, concurrency)]
        return [top.cpu / bottom.cpu for top, bottom in zip(tops, bottoms, strict=True)]


async def run(
    names: Sequence[str], concurrencies: Sequence[int], cpu_budget: float, repeats: int
) -> Results:
    """Measure every contender at every concurrency, ``repeats`` times, interleaved."""
    results = Results()
    with serve_in_subprocess() as base_url:
        for _ in range(repeats):
            for concurrency in concurrencies:
                for name in names:
                    cell = await CONTENDERS[name](base_url, concurrency, cpu_budget)
                    results.add(name, concurrency, cell)
    return results


def report(results: Results, names: Sequence[str], concurrencies: Sequence[int]) -> str:
    """The figures table, then the targets table where both sides of a ratio were measured."""
    headers = ["contender", *(f"c={c} µs CPU/poll" for c in concurrencies)]
    headers += [f"c={c} polls/s" for c in concurrencies]
    rows = [
        [name]
        + [f"{results.cpu_us(name, c):.0f}" for c in concurrencies]
        + [f"{results.polls_per_s(name, c):.0f}" for c in concurrencies]
        for name in names
    ]
    parts = [table("Client CPU per status poll (median over repeats)", headers, rows)]
    targets = _target_rows(results, names, concurrencies)
    if targets:
        headers = ["comparison", "concurrency", "numerator µs", "denominator µs", "ratio"]
        headers += ["ratio range", "best / best", "target"]
        title = (
            "Ratios against the targets (ratio: median of the per-repeat paired ratios; "
            "best / best: the least CPU per poll of each side over the repeats)"
        )
        parts.append(table(title, headers, targets))
    return "\n".join(parts)


_TARGETS = (
    (CLIENT, RAW_MSGSPEC, "≤ 1.10x"),
    (WATCHER, RAW_MSGSPEC, "≤ 1.20x"),
    (SWEEPER, WATCHER, "(for scale)"),
    (PROM_CLIENT, CLIENT, "(cost of Prometheus)"),
    (PROM_WATCHER, WATCHER, "(cost of Prometheus)"),
    (SDK, CLIENT, "≥ 10x at c=64"),
    (RAW_JSON, RAW_MSGSPEC, "(for scale)"),
)


def _target_rows(
    results: Results, names: Sequence[str], concurrencies: Sequence[int]
) -> list[list[str]]:
    rows = []
    for numerator, denominator, target in _TARGETS:
        if numerator not in names or denominator not in names:
            continue
        for c in concurrencies:
            top, bottom = results.cpu_us(numerator, c), results.cpu_us(denominator, c)
            paired = results.paired_ratios(numerator, denominator, c)
            label = f"{numerator} / {denominator}"
            spread = f"{min(paired):.2f}-{max(paired):.2f}"
            best = results.best_cpu_us(numerator, c) / results.best_cpu_us(denominator, c)
            rows.append(
                [
                    label,
                    str(c),
                    f"{top:.0f}",
                    f"{bottom:.0f}",
                    f"{median(paired):.2f}x",
                    spread,
                    f"{best:.2f}x",
                    target,
                ]
            )
    return rows


def main(argv: Sequence[str] | None = None) -> Results:
    """Parse the command line, run, print the tables; returns the raw results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.poll_cpu", description=__doc__)
    parser.add_argument(
        "--cpu-budget", type=float, default=0.3, help="client CPU seconds per cell (default 0.3)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="repeats per cell (default 5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64, 256])
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    args = parser.parse_args(argv)
    print(machine_line())
    print(f"CPU budget per cell: {args.cpu_budget} s, repeats: {args.repeats}")
    results = asyncio.run(run(args.only, args.concurrency, args.cpu_budget, args.repeats))
    print(report(results, args.only, args.concurrency))
    return results


if __name__ == "__main__":
    main()
