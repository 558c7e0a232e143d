"""A job advanced one wave at a time (`Job.advance`), with the waiting done outside it, as the
Airflow job operator does between deferrals: the same outcomes, retries and slots as a job
that runs whole, checked from the simulator's side."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from asyncbatch import Client
from asyncbatch._jobs.output import deliver
from asyncbatch.testing import Simulator
from tests.test_jobs import FAST, KEY, PROMPT, line_of, overlap, requests, sent_lines

pytestmark = pytest.mark.anyio


async def wave(client: Client, source: Any, state: str, out: Path, **options: Any) -> list[str]:
    """One wave on a fresh `Job` (as a fresh worker builds it); its outcomes appended to
    ``out``. Returns the job's batches still active."""
    job = client.jobs.run(source, defaults=PROMPT, state=state, auto_ack=False, **options)
    async with job.advance() as active:
        with out.open("a", encoding="utf-8") as file:
            await deliver(job, file)
    return active


async def until_any_ends(client: Client, batch_ids: list[str]) -> None:
    async with client.watch(batch_ids, stop_when_done=True, poll=FAST) as watcher:
        async for event in watcher:
            if event.is_final:
                return


async def test_a_job_advanced_in_waves_ends_like_a_whole_run_without_twin_batches(
    tmp_path: Path,
) -> None:
    """A job advanced wave by wave on its state ends like a whole run: one line per request,
    retries up to max_attempts, no twin batch, at most five active, ready never resent."""
    state = f"sqlite:///{tmp_path / 'job.db'}"
    out = tmp_path / "results.jsonl"
    async with (
        Simulator(api_key=KEY, seed=8, item_failure_rate=0.1, failing_assets={"asset-3"}) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        waves = 1
        active = await wave(client, requests(700), state, out, max_attempts=3)
        while active:
            await until_any_ends(client, active)
            active = await wave(client, requests(700), state, out, max_attempts=3)
            waves += 1
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(line["line"] for line in lines) == list(range(1, 701))
        assert waves > 3
        by_line = {line["line"]: line for line in lines}
        assert by_line[4]["status"] == "failed"  # asset-3 fails every attempt
        assert by_line[4]["attempts"] == 3
        # Other requests fail at random (10 %), so which of them used all three attempts depends
        # on the simulator's draws, which follow the job's timing: any that failed used all three.
        assert all(line["status"] == "ready" or line["attempts"] == 3 for line in lines)
        assert sum(line["status"] == "ready" for line in lines) >= 690
        # From the simulator's side: one create per batch (no twin), at most five at a time,
        # each request sent exactly as often as its attempts, a ready one never again.
        assert sim.stats.requests["create"] == len(sim.batch_ids())
        assert overlap(sim) <= 5
        attempts = Counter(line_of(custom_id) for custom_id, _ in sent_lines(sim))
        assert all(attempts[line["line"]] == line["attempts"] for line in lines)
        ready = Counter(line_of(c) for c, status in sent_lines(sim) if status == "ready")
        assert max(ready.values()) == 1


async def test_a_job_is_entered_once_whether_by_advance_or_async_with(tmp_path: Path) -> None:
    """`advance()` runs every batch the job made, and a job entered once cannot be entered again."""
    async with (
        Simulator(api_key=KEY, seed=9) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        job = client.jobs.run(requests(3), defaults=PROMPT, state=f"sqlite:///{tmp_path / 'j.db'}")
        async with job.advance() as active:
            assert sorted(active) == sorted(sim.batch_ids())  # every batch it made runs
        with pytest.raises(RuntimeError, match="entered only once"):
            async with job.advance():
                pass
