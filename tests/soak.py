"""The fault soak: one watcher follows many batches on a faulty simulator, under virtual time.

`soak` runs the watcher over ``batches`` batches, ``concurrent`` of them open
at once (a new batch joins each time one ends, as in a service), while the
simulator injects every fault kind at ``fault_rate`` plus rare long 429s. A
`Checker` verifies each event as it arrives, so the soak holds no history and
its own memory stays flat too. tests/test_soak.py runs a short soak in the
suite; the long one is a command (see docs/reliability.md)::

    .venv/bin/python -m tests.soak --batches 2000 --concurrent 100 --fault-rate 0.3
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from asyncbatch import Client, Event, EventKind, Watcher
from asyncbatch._events import is_stale
from asyncbatch.testing import FaultRule, Simulator, VirtualTimeLoop

KEY = "soak-key-never-printed-0123456789"

# Traces allocated by the library itself (the simulator and this harness excluded):
# what "memory stays flat" is about.
_LIBRARY_FILES = ("*/asyncbatch/_*.py",)


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakConfig:
    """What to run: how many batches, how faulty, under which budget."""

    batches: int = 200
    concurrent: int = 40
    fault_rate: float = 0.3
    long_429_rate: float = 0.005
    long_retry_after: float = 600.0
    requests_per_second: float | None = 10.0
    burst: float = 10.0
    strategy: str = "auto"
    item_seconds: float = 20.0
    seed: int = 1
    trace_memory: bool = False


@dataclass(slots=True, kw_only=True)
class SoakReport:
    """What a soak measured; `violations` is empty when every guarantee held."""

    config: SoakConfig
    finals: Counter[str] = field(default_factory=Counter)
    events: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    rate_limited: int = 0
    polls: int = 0
    sweeps: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_buffered: int = 0
    peak_tracked: int = 0
    memory_half: int | None = None
    memory_end: int | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def total_requests(self) -> int:
        """Requests the simulator received, every endpoint together."""
        return sum(self.requests.values())

    @property
    def request_allowance(self) -> float:
        """The most requests the budget allows over the run: elapsed x rate + burst."""
        if self.config.requests_per_second is None:
            return math.inf
        return self.virtual_seconds * self.config.requests_per_second + self.config.burst

    def lines(self) -> list[str]:
        """The figures, one per line, for a terminal or a test run with ``-s``."""
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        memory = (
            f"library memory at half {self.memory_half} B, at end {self.memory_end} B"
            if self.memory_half is not None
            else "library memory not traced (--trace-memory)"
        )
        return [
            f"soak: {self.config.batches} batches, {self.config.concurrent} open at once, "
            f"strategy {self.config.strategy}, seed {self.config.seed}",
            f"finals: {dict(self.finals)}; events: {self.events}",
            f"requests: {self.total_requests} {dict(sorted(self.requests.items()))} "
            f"(budget allows {self.request_allowance:.0f})",
            f"faults injected: {sum(self.faults.values())} ({faults})",
            f"watcher: polls {self.polls}, sweeps {self.sweeps}, retries {self.retries}, "
            f"429 pauses {self.rate_limited}",
            f"peak buffered events {self.peak_buffered}, peak tracked batches {self.peak_tracked}",
            memory,
            f"time: {self.virtual_seconds:.0f} virtual s, {self.wall_seconds:.2f} wall s",
            f"violations: {len(self.violations)}",
            *(f"  {v}" for v in self.violations[:20]),
        ]


class Checker:
    """Checks each event against the guarantees as it arrives, keeping one event per open batch."""

    def __init__(self, sim: Simulator, report: SoakReport) -> None:
        self._sim = sim
        self._report = report
        self._last: dict[str, Event] = {}
        self.ended: set[str] = set()

    def see(self, event: Event) -> None:
        """Record a violation for anything this event breaks."""
        batch_id = event.batch_id
        if batch_id in self.ended:
            self._violation(event, "an event after the final one")
            return
        last = self._last.get(batch_id)
        if event.previous is not (last.batch if last is not None else None):
            self._violation(event, "previous is not the snapshot delivered before")
        if last is not None and last.batch is not None and event.batch is not None:
            if is_stale(last.batch, event.batch):
                self._violation(event, "went backwards")
            if last.batch == event.batch:
                self._violation(event, "the same snapshot twice")
        if event.is_final:
            self._last.pop(batch_id, None)
            self.ended.add(batch_id)
            self._report.finals[event.kind] += 1
            self._check_final(event)
        else:
            self._last[batch_id] = event

    def _check_final(self, event: Event) -> None:
        if event.kind is not EventKind.DONE or event.batch is None:
            self._violation(event, f"ended {event.kind} ({event.error!r})")
            return
        server = self._sim.batch(event.batch_id)
        finished = server["ready_items"] + server["failed_items"] + server["canceled_items"]
        if (event.batch.status, event.batch.finished_items) != (server["status"], finished):
            self._violation(event, f"done {event.batch.status} but the server says {server}")

    def _violation(self, event: Event, what: str) -> None:
        self._report.violations.append(f"{event.batch_id} {event.kind}: {what}")


def _fault_rules(config: SoakConfig) -> list[FaultRule]:
    return [
        # Rare long pauses first (rules are tried in order), then every kind at short values.
        FaultRule(rate=config.long_429_rate, kinds=["429"], retry_after=config.long_retry_after),
        FaultRule(rate=config.fault_rate, retry_after=2.0, latency=3.0),
    ]


def _library_memory() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in _LIBRARY_FILES]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def soak(config: SoakConfig) -> SoakReport:
    """Run one soak and report what happened; never raises for a broken guarantee."""
    report = SoakReport(config=config)
    rng = random.Random(config.seed)
    wall_start = time.perf_counter()
    if config.trace_memory:
        tracemalloc.start()
    try:
        async with (
            Simulator(
                api_key=KEY,
                seed=config.seed,
                faults=_fault_rules(config),
                item_seconds=config.item_seconds,
                item_failure_rate=0.1,
                max_active=config.batches,
            ) as sim,
            Client(api_key=KEY, base_url=sim.base_url) as client,
        ):
            started = anyio.current_time()
            checker = Checker(sim, report)
            first = [_new_batch(sim, rng) for _ in range(min(config.concurrent, config.batches))]
            created = len(first)
            async with client.watch(
                first,
                strategy=config.strategy,
                requests_per_second=config.requests_per_second,
                burst=config.burst,
                min_interval=2.0,
                max_interval=30.0,
                max_decode_failures=50,
                seed=config.seed,
            ) as watcher:
                async for event in watcher:
                    report.events += 1
                    checker.see(event)
                    _sample(watcher, report)
                    if not event.is_final:
                        continue
                    # A service forgets ended batches, so tracked state stays bounded.
                    watcher.discard(event.batch_id)
                    if created < config.batches:
                        watcher.add(_new_batch(sim, rng))
                        created += 1
                    if config.trace_memory and len(checker.ended) == config.batches // 2:
                        report.memory_half = _library_memory()
            if config.trace_memory:
                report.memory_end = _library_memory()
            _finish(report, watcher, sim, checker, anyio.current_time() - started)
    finally:
        if config.trace_memory:
            tracemalloc.stop()
    report.wall_seconds = time.perf_counter() - wall_start
    return report


def _new_batch(sim: Simulator, rng: random.Random) -> str:
    batch_id: str = sim.create_batch(rng.randint(1, 6))["batch_id"]
    return batch_id


def _sample(watcher: Watcher, report: SoakReport) -> None:
    stats = watcher.statistics()
    report.peak_buffered = max(report.peak_buffered, stats.buffered)
    report.peak_tracked = max(report.peak_tracked, stats.tracked)


def _finish(
    report: SoakReport, watcher: Watcher, sim: Simulator, checker: Checker, elapsed: float
) -> None:
    stats = watcher.statistics()
    report.polls, report.sweeps = stats.polls, stats.sweeps
    report.retries, report.rate_limited = stats.retries, stats.rate_limited
    report.requests, report.faults = sim.stats.requests, sim.stats.faults
    report.virtual_seconds = elapsed
    missing = report.config.batches - len(checker.ended)
    if missing:
        report.violations.append(f"{missing} batches never had a final event")
    if report.total_requests > report.request_allowance:
        report.violations.append(
            f"{report.total_requests} requests exceed the budget's {report.request_allowance:.0f}"
        )


def _parse(argv: Sequence[str]) -> SoakConfig:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batches", type=int, default=defaults.batches)
    parser.add_argument("--concurrent", type=int, default=defaults.concurrent)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--long-429-rate", type=float, default=defaults.long_429_rate)
    parser.add_argument("--long-retry-after", type=float, default=defaults.long_retry_after)
    parser.add_argument(
        "--rate", type=float, default=defaults.requests_per_second, help="0: no budget"
    )
    parser.add_argument("--burst", type=float, default=defaults.burst)
    parser.add_argument("--strategy", choices=["auto", "per_id", "sweep"], default="auto")
    parser.add_argument("--item-seconds", type=float, default=defaults.item_seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--trace-memory", action="store_true")
    args = parser.parse_args(argv)
    return SoakConfig(
        batches=args.batches,
        concurrent=args.concurrent,
        fault_rate=args.fault_rate,
        long_429_rate=args.long_429_rate,
        long_retry_after=args.long_retry_after,
        requests_per_second=args.rate or None,
        burst=args.burst,
        strategy=args.strategy,
        item_seconds=args.item_seconds,
        seed=args.seed,
        trace_memory=args.trace_memory,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak from the command line; exit status 1 when a guarantee broke."""
    config = _parse(sys.argv[1:] if argv is None else argv)
    report = anyio.run(soak, config, backend_options={"loop_factory": VirtualTimeLoop})
    print("\n".join(report.lines()))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
