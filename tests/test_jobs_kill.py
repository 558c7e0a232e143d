"""``asyncbatch run`` SIGKILLed at random moments and rerun: one output line per request.

Each run is a real ``asyncbatch run`` process against a simulator served from this process
(on a clock that runs only while a run is up, 40 times faster than real time), with items
that fail now and then. The test kills runs after seeded random delays (so kills fall
before creates, between a create and its record, while results are collected and while
output is written), reruns the same command, and lets the last run finish. Then, from the
output file and from the simulator's own record of every batch:

* every request has exactly one line, and each line's ``attempts`` is the number of the
  simulator's batches that held the request (no request was sent in a batch the job lost);
* no request that was ``ready`` in one batch went into another;
* no intent made two batches (each ``TAG-SEQ-`` custom-ID prefix is in one batch only).

``ASYNCBATCH_JOB_KILLS=N`` (default 4) sets the number of kills; ``ASYNCBATCH_JOB_SEED`` the
seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests._redis_server import fresh_prefix
from tests.replica_worker import API_KEY, ROOT, RunningClock, serve_simulator, wait_for

KILLS = int(os.environ.get("ASYNCBATCH_JOB_KILLS", "4"))
SEED = int(os.environ.get("ASYNCBATCH_JOB_SEED", "20261130"))
REQUESTS = 60 * (KILLS + 1)  # a longer run for more kills, or the job ends first


def start_run(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TWELVELABS_API_KEY": API_KEY}
    with log.open("ab") as errors:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "asyncbatch", "run", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def process_ended(process: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: process.poll() is not None


def write_requests(path: Path, count: int) -> None:
    lines = [
        json.dumps({"video": {"asset_id": f"asset-{i}"}, "custom_id": f"req-{i}"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")


def check_against_simulator(out: Path, sent: list[tuple[str, str, str]], count: int) -> None:
    """``sent`` is every (batch_id, custom_id, status) the simulator holds."""
    lines = [json.loads(raw) for raw in out.read_text().splitlines()]
    assert sorted(line["line"] for line in lines) == list(range(1, count + 1))
    held = Counter(int(custom_id.rsplit("-", 1)[1]) for _, custom_id, _ in sent)
    assert {line["line"]: line["attempts"] for line in lines} == dict(held)
    ready = Counter(int(c.rsplit("-", 1)[1]) for _, c, status in sent if status == "ready")
    assert set(ready.values()) <= {1}
    batches_of_intent: dict[str, set[str]] = {}
    for batch_id, custom_id, _ in sent:
        prefix = custom_id.rsplit("-", 1)[0]
        batches_of_intent.setdefault(prefix, set()).add(batch_id)
    assert all(len(batches) == 1 for batches in batches_of_intent.values())
    for line in lines:
        assert (line["status"] == "ready") == (line["data"] is not None)


@pytest.fixture(params=["sqlite", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The job's ``--state``: a SQLite file, or a fresh prefix on the module's redis-server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'job.db'}"
    redis_url: str = request.getfixturevalue("redis_url")
    return f"{redis_url}?prefix={fresh_prefix()}"


@pytest.mark.timeout(60 + 15 * KILLS)
def test_killed_runs_resume_to_exactly_one_line_per_request(tmp_path: Path, state: str) -> None:
    """`asyncbatch run` killed with SIGKILL at random moments and rerun on its state (SQLite or
    Redis) ends with exactly one results line per request, agreeing with the server."""
    rng = random.Random(SEED)
    clock = RunningClock(scale=40.0)
    options = {"item_seconds": 2.0, "pending_seconds": 0.5, "item_failure_rate": 0.1, "seed": SEED}
    source, out, log = tmp_path / "requests.jsonl", tmp_path / "results.jsonl", tmp_path / "log"
    write_requests(source, REQUESTS)
    with serve_simulator(clock, **options) as (portal, sim):
        args = [str(source), "--prompt", "Describe it.", "--out", str(out), "--plain"]
        args += ["--state", state, "--max-attempts", "3"]
        args += ["--base-url", sim.base_url, "--interval", "0.2", "--max-interval", "0.5"]
        codes = []
        for run in range(KILLS + 1):
            process = start_run(args, log)
            clock.run()
            try:
                if run < KILLS and not wait_for(process_ended(process), rng.uniform(0.2, 1.2)):
                    process.kill()
                codes.append(process.wait(timeout=60))
            finally:
                clock.pause()
            if codes[-1] in (0, 1):
                break
        sent = [
            (batch_id, r["custom_id"], r["status"])
            for batch_id in portal.call(sim.batch_ids)
            for r in portal.call(sim.results, batch_id)
        ]
    errors = log.read_text()
    assert codes[-1] in (0, 1), f"runs ended {codes}:\n{errors}"
    assert -signal.SIGKILL in codes, f"no run was killed ({codes}): the job ended too soon"
    check_against_simulator(out, sent, REQUESTS)


@pytest.mark.timeout(60)
def test_ctrl_c_leaves_a_resumable_job_and_exits_130(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) mid-job exits 130, and a rerun finishes it with one line per request."""
    clock = RunningClock(scale=40.0)
    source, out, log = tmp_path / "requests.jsonl", tmp_path / "results.jsonl", tmp_path / "log"
    write_requests(source, 100)
    with serve_simulator(clock, item_seconds=2.0, seed=SEED) as (portal, sim):
        args = [str(source), "--prompt", "Describe it.", "--out", str(out), "--plain"]
        args += ["--base-url", sim.base_url, "--interval", "0.2", "--max-interval", "0.5"]
        process = start_run(args, log)
        clock.run()
        try:
            # Interrupt once the job has batches running (its state file exists by then).
            wait_for(lambda: portal.call(sim.batch_ids) != [], 30)
            process.send_signal(signal.SIGINT)
            first = process.wait(timeout=30)
            second = start_run(args, log).wait(timeout=60)
        finally:
            clock.pause()
        sent = [
            (batch_id, r["custom_id"], r["status"])
            for batch_id in portal.call(sim.batch_ids)
            for r in portal.call(sim.results, batch_id)
        ]
    assert first == 130, log.read_text()
    assert second == 0, log.read_text()
    check_against_simulator(out, sent, 100)
