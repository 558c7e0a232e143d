"""A watcher process SIGKILLed at random moments and restarted loses no final event.

Each run is a separate process (`tests.replica_worker`) that watches the
simulator with a durable store and writes every event to its own file before
acknowledging it. The test kills it at seeded random moments (after a few
lines, or after a random delay, startup included), moves simulated time on
while nothing runs, restarts it with ``resume=True``, and finally lets one run
finish. From the files: every batch's final event was acknowledged exactly
once, nothing of a batch came after that, and a final event came twice only
when the kill fell between writing it and acknowledging it.

Processes make virtual time impossible here, so these tests run on wall time,
with the simulator's clock running (fast) only while a worker is up.
``ASYNCBATCH_CRASH_KILLS=N`` (default 5) sets the number of kills, and
``ASYNCBATCH_CRASH_SEED`` the seed, for a longer run:
``ASYNCBATCH_CRASH_KILLS=100 .venv/bin/pytest tests/test_crash_resume.py``.
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from pathlib import Path

import pytest

from tests._redis_server import stop
from tests.replica_worker import (
    RunningClock,
    check_delivery,
    count_lines,
    read_run,
    serve_simulator,
    spawn,
    wait_for,
    wait_ready,
)

KILLS = int(os.environ.get("ASYNCBATCH_CRASH_KILLS", "5"))
SEED = int(os.environ.get("ASYNCBATCH_CRASH_SEED", "20261129"))
BATCHES = 6


def crash_and_resume(state_url: str, workdir: Path, seed: int) -> str:
    """Run the kill-and-restart scenario; returns a summary for the assertion messages."""
    rng = random.Random(seed)
    clock = RunningClock(scale=10.0)
    options = {"item_seconds": 4.0, "items_at_once": 1, "pending_seconds": 1.0, "max_active": 50}
    with serve_simulator(clock, seed=seed, **options) as (portal, sim):
        # Longer runs need longer batches, or every batch ends before the last kill.
        sizes = [rng.randint(2, 3 + KILLS) for _ in range(BATCHES)]
        ids = [portal.call(sim.create_batch, n)["batch_id"] for n in sizes]
        base = ["--base-url", sim.base_url, "--state", state_url, "--ids", ",".join(ids)]
        clean: list[bool] = []
        for run in range(KILLS + 1):
            out = workdir / f"run-{run}.jsonl"
            process = spawn([*base, "--out", str(out)], workdir / "stderr.log")
            try:
                ready = wait_ready(process)
                clock.run()
                if run == KILLS or not ready:
                    clean.append(process.wait(timeout=120) == 0)
                    break
                wait_to_kill(process, out, rng)
                if process.poll() is not None:  # finished before its kill: nothing left to do
                    clean.append(process.returncode == 0)
                    break
                process.kill()
                process.wait(timeout=10)
                clean.append(False)
            finally:
                stop(process)
                clock.pause()
            clock.jump(rng.uniform(0.0, 4.0))  # batches move on while nothing watches
        truth = {b: portal.call(sim.batch, b)["status"] for b in ids}
    lines = [
        line
        for run, ended in enumerate(clean)
        for line in read_run(workdir / f"run-{run}.jsonl", run, exited_cleanly=ended)
    ]
    verdict = check_delivery(lines, ids)
    summary = f"runs={len(clean)} lines={len(lines)} redelivered={verdict.redelivered}"
    errors = (workdir / "stderr.log").read_text()
    assert clean[-1], f"the last run failed ({summary}):\n{errors}"
    assert verdict.ok, f"{verdict} ({summary}):\n{errors}"
    assert verdict.final_status == truth
    assert len(clean) >= 3, f"the batches ended before the kills could bite ({summary})"
    return summary


def wait_to_kill(process: subprocess.Popen[bytes], out: Path, rng: random.Random) -> None:
    """Until a few more lines are written, or for a random while; less if the worker exits."""
    if rng.random() < 0.5:
        wanted = count_lines(out) + rng.randint(1, 3)
        wait_for(lambda: count_lines(out) >= wanted or process.poll() is not None, 30)
    else:
        wait_for(lambda: process.poll() is not None, rng.uniform(0.02, 0.8))


@pytest.mark.timeout(120 + 15 * KILLS)
def test_sqlite_store_survives_random_kills(tmp_path: Path) -> None:
    """SIGKILLed watchers on a SQLite store: every final event acknowledged once, none after."""
    summary = crash_and_resume(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, SEED)
    print(f"sqlite: {summary}")


@pytest.mark.timeout(120 + 15 * KILLS)
def test_redis_store_survives_random_kills(tmp_path: Path, redis_url: str) -> None:
    """SIGKILLed watchers on a Redis store: every final event acknowledged once, none after."""
    state = f"{redis_url}?prefix=crash:{uuid.uuid4().hex}:"
    summary = crash_and_resume(state, tmp_path, SEED + 1)
    print(f"redis: {summary}")
