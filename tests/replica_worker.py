"""A watcher process for the kill tests, and the reading of what it wrote.

``python -m tests.replica_worker --base-url URL --state STATE_URL --out FILE
--ids ID,ID,...`` watches the batches with ``resume=True`` on the store named
by ``STATE_URL`` (see `asyncbatch._stores.url`) and appends one JSON line per
event to ``FILE``, written, flushed and fsynced before it asks for the next
event, which acknowledges it (``auto_ack``). So a line that is followed by
another line of the same run was acknowledged; the last line of a run that
was killed may not have been. The API key comes from ``TWELVELABS_API_KEY``.
"ready" goes to stdout once the watcher runs.

With ``--replica OWNER`` it is one replica of a fleet on Redis: it shares the
request budget (``--rate``, ``--burst``) and takes leases of ``--lease``
seconds, and exits once the store holds a final record for every batch.

A test drives workers with `spawn` and `wait_ready`, serves them a simulator
on a `RunningClock` with `serve_simulator`, and turns their files back into a
verdict with `read_run` and `check_delivery`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from asyncbatch import Client, Event, Watcher
from asyncbatch._stores.url import OpenedStore, open_store

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from asyncbatch.testing import Clock, Simulator

WATCH_OPTIONS: dict[str, Any] = {
    "min_interval": 0.05,
    "max_interval": 0.25,
    "stagger": 0.05,
    "jitter": 0.1,
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.replica_worker")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--replica", help="owner name: run as one replica of a Redis fleet")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--burst", type=float)
    return parser.parse_args(argv)


def line_of(event: Event, owner: str) -> bytes:
    """One event as a JSON line, with the wall time it was written (to order replicas)."""
    batch = event.batch
    record = {
        "batch_id": event.batch_id,
        "kind": str(event.kind),
        "final": event.is_final,
        "status": None if batch is None else batch.status,
        "finished": None if batch is None else batch.finished_items,
        "owner": owner,
        "t": time.time(),
    }
    return (json.dumps(record) + "\n").encode()


async def watch(args: argparse.Namespace) -> None:
    ids = args.ids.split(",")
    owner = args.replica or f"pid-{os.getpid()}"
    options = dict(WATCH_OPTIONS)
    async with open_store(args.state) as state, Client(base_url=args.base_url) as client:
        if args.replica is not None:
            options |= replica_options(state, args)
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            async with Watcher(client, ids, state=state.store, resume=True, **options) as w:
                print("ready", flush=True)
                async with anyio.create_task_group() as group:
                    if args.replica is not None:
                        group.start_soon(stop_when_all_final, state, ids, group.cancel_scope)
                    async for event in w:
                        # Durable before the next request acknowledges it.
                        os.write(fd, line_of(event, owner))
                        os.fsync(fd)
                    group.cancel_scope.cancel()
        finally:
            os.close(fd)


def replica_options(state: OpenedStore, args: argparse.Namespace) -> dict[str, Any]:
    if state.gate is None or state.leases is None:
        raise SystemExit("--replica needs a redis:// state")
    return {
        "gate": state.gate(args.rate, args.burst),
        "leases": state.leases(args.replica, args.lease),
        "stop_when_done": False,
    }


async def stop_when_all_final(state: OpenedStore, ids: list[str], scope: anyio.CancelScope) -> None:
    """A replica cannot know from its own events when the fleet is done: ask the store."""
    wanted = set(ids)
    while True:
        await anyio.sleep(0.05)
        if wanted <= {r.batch_id for r in await state.store.load() if r.final}:
            scope.cancel()
            return


def main(argv: Sequence[str] | None = None) -> None:
    anyio.run(watch, parse_args(sys.argv[1:] if argv is None else argv))


# -- reading the files back --------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One event line of one run, and whether the run's consumer acknowledged it."""

    run: int
    batch_id: str
    final: bool
    status: str | None
    t: float
    acknowledged: bool


def read_run(path: Path, run: int, *, exited_cleanly: bool) -> list[Line]:
    """The complete lines of one run's file. A line cut by the kill was never acknowledged
    (the worker writes before it asks for the next event), so it is dropped. Every line
    but the last was acknowledged; the last only if the run ended by itself."""
    if not path.exists():
        return []
    raw = path.read_bytes().split(b"\n")
    records = [json.loads(chunk) for chunk in raw[:-1]]  # raw[-1]: after the last newline
    return [
        Line(
            run=run,
            batch_id=r["batch_id"],
            final=r["final"],
            status=r["status"],
            t=r["t"],
            acknowledged=exited_cleanly or i < len(records) - 1,
        )
        for i, r in enumerate(records)
    ]


@dataclass
class Delivery:
    """The verdict on a set of runs: what was missed, repeated, or came too late."""

    missing: set[str] = field(default_factory=set)
    """Batches without a final event."""
    repeated: dict[str, int] = field(default_factory=dict)
    """Batches whose final event was acknowledged more than once."""
    after_final: list[Line] = field(default_factory=list)
    """Lines written after their batch's final event was acknowledged."""
    redelivered: int = 0
    """Final events delivered again because the first was not acknowledged: allowed."""
    final_status: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.repeated or self.after_final)


def check_delivery(lines: list[Line], batch_ids: Sequence[str]) -> Delivery:
    """Every batch's final event acknowledged exactly once, and nothing of it afterwards."""
    verdict = Delivery()
    ordered = sorted(lines, key=lambda line: line.t)
    for batch_id in batch_ids:
        own = [line for line in ordered if line.batch_id == batch_id]
        finals = [line for line in own if line.final]
        acked = [line for line in finals if line.acknowledged]
        if not finals:
            verdict.missing.add(batch_id)
            continue
        # A final that ends a killed run may or may not have been acknowledged:
        # coming again is allowed (at least once), and so is not coming again.
        verdict.redelivered += len(finals) - 1
        if len(acked) > 1:
            verdict.repeated[batch_id] = len(acked)
        if acked:
            verdict.after_final += [line for line in own if line.t > acked[0].t]
        verdict.final_status[batch_id] = finals[-1].status
    return verdict


# -- driving workers from a test ----------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sim-key"


class RunningClock:
    """Simulated seconds that pass ``scale`` times faster than real ones, but only while
    `run` is on (a worker watches), so slow process starts do not eat the batches' lives;
    `jump` moves time while nothing runs."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._base = 0.0
        self._since: float | None = None
        self._lock = threading.Lock()  # read by the simulator's thread

    def __call__(self) -> float:
        with self._lock:
            return self._now()

    def _now(self) -> float:
        if self._since is None:
            return self._base
        return self._base + (time.monotonic() - self._since) * self.scale

    def run(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def pause(self) -> None:
        with self._lock:
            self._base, self._since = self._now(), None

    def jump(self, seconds: float) -> None:
        with self._lock:
            self._base += seconds


@contextmanager
def serve_simulator(clock: Clock, **options: Any) -> Iterator[tuple[BlockingPortal, Simulator]]:
    """A simulator on its own event loop thread, on ``clock``; call it through the portal."""
    # Imported here: worker processes never need the simulator, and start faster without.
    from anyio.from_thread import start_blocking_portal  # noqa: PLC0415

    from asyncbatch.testing import Simulator  # noqa: PLC0415

    with start_blocking_portal() as portal:
        sim = portal.call(lambda: Simulator(api_key=API_KEY, clock=clock, **options))
        with portal.wrap_async_context_manager(sim):
            yield portal, sim


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a worker; its stderr goes to ``log`` for the assertion messages."""
    env = {**os.environ, "TWELVELABS_API_KEY": API_KEY}
    with log.open("ab") as errors:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tests.replica_worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )


def wait_ready(process: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    """Wait until the worker says "ready" (True) or exits (False); `TimeoutError` if neither."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    if not readable:
        raise TimeoutError("the worker did not start in time")
    return process.stdout.readline().strip() == b"ready"


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` real seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # other processes move on real time: poll, never assume
    return True


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


if __name__ == "__main__":
    main()
