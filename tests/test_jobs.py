"""Jobs through the simulator on virtual time: slots, retries, expiry, 429s, faults, resume,
orphan adoption and cancel, each checked from the simulator's side as well as the job's."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncbatch import (
    Client,
    Event,
    EventKind,
    InvalidRequestError,
    Job,
    JobOutcome,
    JobProgress,
    PollPolicy,
    TelemetryHooks,
    set_telemetry_hooks,
)
from asyncbatch._jobs import open_ledger
from asyncbatch._jobs.ledger import Intent
from asyncbatch.testing import FaultKind, FaultRule, Simulator
from tests._redis_server import fresh_prefix
from tests.test_cli_support import cli

pytestmark = pytest.mark.anyio

KEY = "job-key"
PROMPT = {"prompt": {"input_text": "Describe the video."}}
VIDEO = b'{"video":{"asset_id":"a","type":"asset_id"}}'
FAST = PollPolicy(min_interval=5.0, max_interval=30.0, stagger=0.0)


@pytest.fixture(params=["sqlite", "redis"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A job state URL: a SQLite file, or a fresh prefix on the module's redis-server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'job.db'}"
    redis_url: str = request.getfixturevalue("redis_url")
    # No 5 s socket timeout (redis-py's default): on the virtual clock it is a timer the
    # loop may jump to while a Redis script runs.
    return f"{redis_url}?prefix={fresh_prefix()}&socket_timeout=1e6&socket_connect_timeout=1e6"


def requests(count: int, *, prefix: str = "c") -> list[dict[str, Any]]:
    return [
        {"video": {"asset_id": f"asset-{i}"}, "custom_id": f"{prefix}{i}"} for i in range(count)
    ]


async def run_job(sim: Simulator, source: Any, **options: Any) -> list[JobOutcome]:
    options.setdefault("defaults", PROMPT)
    options.setdefault("poll", FAST)
    async with (
        Client(api_key=KEY, base_url=sim.base_url) as client,
        client.jobs.run(source, **options) as job,
    ):
        return [outcome async for outcome in job]


def sent_lines(sim: Simulator) -> list[tuple[str, str]]:
    """Every (custom_id, status) the simulator holds, over all its batches."""
    return [(r["custom_id"], r["status"]) for b in sim.batch_ids() for r in sim.results(b)]


def line_of(custom_id: str) -> int:
    return int(custom_id.rsplit("-", 1)[1])


def assert_once_each(outcomes: Iterable[JobOutcome], count: int) -> None:
    lines = [o.line for o in outcomes]
    assert sorted(lines) == list(range(1, count + 1))


def overlap(sim: Simulator) -> int:
    """The most batches that were active at the same moment, from the simulator's record."""
    spans = []
    for batch_id in sim.batch_ids():
        body = sim.batch(batch_id)
        start = sim.clock_at(_when(body["created_at"]))
        ended = body.get(f"{body['status']}_at")
        end = sim.now() if ended is None else sim.clock_at(_when(ended))
        spans += [(start, 1), (end, -1)]
    level = peak = 0
    for _, step in sorted(spans):
        level += step
        peak = max(peak, level)
    return peak


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_every_request_comes_out_once_through_at_most_five_batches_at_a_time() -> None:
    """1,500 requests each come out once, ready, through at most five active batches, with no
    create refused or wasted; an outcome carries its custom_id, data, batch and task."""
    async with Simulator(api_key=KEY, seed=3, max_active=5) as sim:
        outcomes = await run_job(sim, requests(1500))
        assert_once_each(outcomes, 1500)
        assert {o.status for o in outcomes} == {"ready"}
        assert overlap(sim) <= 5
        # Sized so that every slot stays busy: no create was refused, none wasted.
        assert sim.stats.requests["create"] == len(sim.batch_ids())
        sent = sent_lines(sim)
        assert len(sent) == 1500
        first = next(o for o in outcomes if o.line == 1)
        assert first.custom_id == "c0"
        assert first.data is not None
        assert first.batch_id is not None
        assert first.task_id in {r["task_id"] for r in sim.results(first.batch_id)}


async def test_foreign_active_batches_leave_the_job_only_the_free_slots() -> None:
    """Batches the job did not make count against the active limit: it uses only the free slots
    and never gets a 429."""
    async with Simulator(api_key=KEY, seed=4, max_active=5, item_seconds=40.0) as sim:
        foreign = [sim.create_batch(200)["batch_id"] for _ in range(3)]
        outcomes = await run_job(sim, requests(400))
        assert_once_each(outcomes, 400)
        ours = [b for b in sim.batch_ids() if b not in foreign]
        assert sim.stats.requests["create"] == len(ours)  # never a 429: it counted the others
        assert overlap(sim) <= 5


async def test_a_429_on_create_waits_for_one_of_its_batches_to_end() -> None:
    """When the account allows fewer active batches than the job assumes, a 429 on create waits
    for one of its batches to end instead of spinning; every request still comes out once."""
    # The job believes in five slots; the account allows two: creates beyond two get 429.
    async with Simulator(api_key=KEY, seed=5, max_active=2) as sim:
        outcomes = await run_job(sim, requests(600), max_active=5)
        assert_once_each(outcomes, 600)
        batches = len(sim.batch_ids())
        refused = sim.stats.requests["create"] - batches
        assert refused >= 1
        # Waited for an end each time, never spun: at most a few refusals per batch.
        assert refused <= batches + 2
        assert overlap(sim) <= 2


async def test_failed_items_go_round_until_max_attempts_and_ready_is_never_resent() -> None:
    """Failed items go into new batches until `max_attempts`, keeping each attempt's history and
    error; a ready item is never sent again."""
    async with Simulator(
        api_key=KEY, seed=6, item_failure_rate=0.2, failing_assets={"asset-7"}
    ) as sim:
        outcomes = await run_job(sim, requests(300), max_attempts=3)
        assert_once_each(outcomes, 300)
        by_line = {o.line: o for o in outcomes}
        doomed = by_line[8]  # asset-7 is line 8
        assert doomed.status == "failed"
        assert doomed.attempts == 3
        assert [a.status for a in doomed.history] == ["failed"] * 3
        assert len({a.batch_id for a in doomed.history}) == 3
        assert doomed.error is not None
        assert doomed.error.code == "asset_unavailable"
        retried = [o for o in outcomes if o.status == "ready" and o.attempts > 1]
        assert retried, "with a 20% failure rate some requests succeeded on a later attempt"
        assert all(o.history[-1].status == "ready" for o in retried)
        ready_sent = Counter(line_of(c) for c, status in sent_lines(sim) if status == "ready")
        assert max(ready_sent.values()) == 1  # a ready request never went into another batch
        attempts = Counter(line_of(c) for c, _ in sent_lines(sim))
        assert all(attempts[o.line] == o.attempts for o in outcomes)


async def test_items_an_expired_batch_left_unfinished_go_into_new_batches() -> None:
    """Items left unfinished by an expired batch record `batch_expired` and go into new batches
    until ready."""
    async with Simulator(api_key=KEY, seed=7, expire_after=300.0) as sim:
        outcomes = await run_job(sim, requests(400), max_attempts=4)
        assert_once_each(outcomes, 400)
        assert {o.status for o in outcomes} == {"ready"}
        expired_first = [o for o in outcomes if o.history[0].status == "canceled"]
        assert expired_first
        assert all(o.history[0].error is not None for o in expired_first)
        assert {o.history[0].error.code for o in expired_first if o.history[0].error} == {
            "batch_expired"
        }
        assert any(sim.batch(b)["status"] == "expired" for b in sim.batch_ids())


async def test_invalid_lines_and_repeated_custom_ids_are_refused_before_any_request(
    tmp_path: Path,
) -> None:
    """Invalid JSON, repeated custom_ids and invalid requests are all named by line in one
    InvalidRequestError, raised before any request is sent."""
    source = tmp_path / "requests.jsonl"
    source.write_text(
        '{"video": {"asset_id": "a"}, "custom_id": "x"}\n'
        "{not json\n"
        "\n"
        '{"video": {"asset_id": "b"}, "custom_id": "x"}\n'
        '{"custom_id": "y"}\n'
        '{"video": {"asset_id": "c"}, "custom_id": "bad id!"}\n'
    )
    async with Simulator(api_key=KEY, seed=8) as sim:
        with pytest.raises(InvalidRequestError) as caught:
            await run_job(sim, source, state=f"sqlite:///{tmp_path / 'job.db'}")
        assert sim.stats.requests == {}
    message = str(caught.value)
    assert "line 2: not valid JSON" in message
    assert "line 4: custom_id 'x' repeats line 1" in message
    assert "line 5:" in message
    assert "video" in message
    assert "line 6:" in message
    assert "nothing was sent" in message


async def test_a_file_source_numbers_outcomes_by_file_line(tmp_path: Path) -> None:
    """Outcomes from a file are numbered by file line, blank lines counted but not sent."""
    source = tmp_path / "requests.jsonl"
    source.write_text('{"video": {"asset_id": "a"}}\n\n{"video": {"asset_id": "b"}}\n')
    async with Simulator(api_key=KEY, seed=9) as sim:
        outcomes = await run_job(sim, source)
    assert sorted(o.line for o in outcomes) == [1, 3]
    assert all(o.custom_id is None for o in outcomes)


async def test_an_async_iterable_source_is_read_to_the_end() -> None:
    """An async iterable of requests is read to the end, each request coming out once."""

    async def produce() -> AsyncIterator[dict[str, Any]]:
        for request in requests(50):
            yield request

    async with Simulator(api_key=KEY, seed=10) as sim:
        outcomes = await run_job(sim, produce())
    assert_once_each(outcomes, 50)


async def test_a_resumed_job_never_repeats_an_acknowledged_outcome(tmp_path: Path) -> None:
    """A job resumed from its state delivers only outcomes not yet acknowledged (the last one
    was not) and adopts the first run's batches instead of sending again."""
    state = f"sqlite:///{tmp_path / 'job.db'}"
    async with Simulator(api_key=KEY, seed=11) as sim:
        async with Client(api_key=KEY, base_url=sim.base_url) as client:
            first: list[JobOutcome] = []
            async with client.jobs.run(
                requests(400), defaults=PROMPT, state=state, poll=FAST
            ) as job:
                async for outcome in job:
                    first.append(outcome)
                    if len(first) == 120:
                        break  # the 120th was not acknowledged: it comes again
            batches_before = set(sim.batch_ids())
            second = await run_job(sim, [], state=state)
        acknowledged = {o.line for o in first[:-1]}
        assert not acknowledged & {o.line for o in second}
        assert first[-1].line in {o.line for o in second}
        assert_once_each(first[:-1] + second, 400)
        # The second run adopted the first run's batches instead of sending requests again.
        assert batches_before <= set(sim.batch_ids())
        assert len(sent_lines(sim)) == 400


async def crashed_after_intent(
    state: str, tag: str, requests: int, intent_size: int, *, custom_ids: bool
) -> Intent:
    """The state a job with ``tag`` leaves when it crashes right after recording an intent
    of ``intent_size`` of its ``requests`` (all read in); returns that intent."""
    ledger = await open_ledger(state)
    meta = {
        "input": "complete",
        "tag": tag,
        "model_name": "pegasus1.5",
        "analysis_mode": "general",
        "defaults": '{"prompt":{"input_text":"Describe the video."}}',
    }
    async with ledger.ingesting(meta, 20) as intake:
        for line in range(1, requests + 1):
            await intake.add((line, f"c{line}" if custom_ids else None, VIDEO))
    intent = await ledger.new_intent(intent_size)
    await ledger.aclose()
    return intent


async def test_a_batch_created_before_a_crash_is_adopted_not_created_twice(state: str) -> None:
    """A batch created for an intent before a crash is found by its tagged custom_ids and adopted
    on resume; nothing is sent twice (on a SQLite and on a Redis state)."""
    async with Simulator(api_key=KEY, seed=13) as sim:
        intent = await crashed_after_intent(state, "feedbeef", 30, 10, custom_ids=True)
        orphan = sim.create_batch(
            [
                {
                    "video": {"type": "asset_id", "asset_id": "a"},
                    "custom_id": f"feedbeef-{intent.seq}-{n}",
                }
                for n in intent.lines
            ]
        )["batch_id"]
        outcomes = await run_job(sim, [], state=state)
        assert_once_each(outcomes, 30)
        adopted = [o for o in outcomes if o.line in intent.lines]
        assert {o.batch_id for o in adopted} == {orphan}
        sent = Counter(line_of(c) for c, _ in sent_lines(sim))
        assert set(sent.values()) == {1}  # nothing sent twice, no twin batch


async def test_an_intent_without_a_batch_is_sent_once_after_a_crash(state: str) -> None:
    """An intent recorded before a crash but never sent is sent once on resume (on a SQLite and
    on a Redis state)."""
    async with Simulator(api_key=KEY, seed=14) as sim:
        # The crash came after the intent was recorded, before its create was sent.
        await crashed_after_intent(state, "0badcafe", 20, 20, custom_ids=False)
        outcomes = await run_job(sim, [], state=state)
        assert_once_each(outcomes, 20)
        assert Counter(line_of(c) for c, _ in sent_lines(sim)) == dict.fromkeys(range(1, 21), 1)


async def test_cancel_ends_every_unfinished_request_canceled() -> None:
    """`job.cancel()` ends every request not yet ready as canceled and cancels its batches; no
    request stays waiting or running."""
    progressed = anyio.Event()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.PROGRESS:
            progressed.set()

    async def cancel_when_running(job: Job) -> None:
        await progressed.wait()
        await job.cancel()

    async with Simulator(api_key=KEY, seed=15, item_seconds=60.0) as sim:
        async with Client(api_key=KEY, base_url=sim.base_url) as client:
            job = client.jobs.run(requests(2000), defaults=PROMPT, poll=FAST, on_event=on_event)
            async with job, anyio.create_task_group() as group:
                group.start_soon(cancel_when_running, job)
                outcomes = [outcome async for outcome in job]
                stats = job.statistics()
        assert_once_each(outcomes, 2000)
        statuses = Counter(str(o.status) for o in outcomes)
        assert statuses["canceled"] > 1000
        assert set(statuses) == {"ready", "canceled"}
        assert stats.items["waiting"] == stats.items["running"] == 0
        assert all(sim.batch(b)["status"] in ("canceled", "completed") for b in sim.batch_ids())


async def test_statistics_count_items_batches_and_attempts() -> None:
    """After a job ends its statistics count every item, batch and attempt as the server saw
    them."""
    async with Simulator(api_key=KEY, seed=16, item_failure_rate=0.1) as sim:
        async with (
            Client(api_key=KEY, base_url=sim.base_url) as client,
            client.jobs.run(requests(500), defaults=PROMPT, poll=FAST) as job,
        ):
            outcomes = [o async for o in job]
            stats = job.statistics()
        assert stats.total == 500
        assert stats.finished == 500
        assert sum(stats.items.values()) == 500
        assert stats.batches_done == len(sim.batch_ids())
        assert stats.batches_active == 0
        assert stats.attempts == sum(o.attempts for o in outcomes) == len(sent_lines(sim))
        assert stats.delivered == 500
        assert stats.rate is not None
        assert stats.rate > 0
        assert stats.eta == 0


async def test_a_job_survives_faults_on_every_endpoint() -> None:
    """Under 5xx, dropped connections and 429s on every endpoint each request comes out once,
    ready, and an ambiguous create never makes a twin batch."""
    faults = [
        FaultRule(rate=0.1, kinds=(FaultKind.HTTP_500, FaultKind.HTTP_503, FaultKind.DROP)),
        FaultRule(rate=0.1, kinds=(FaultKind.RATE_LIMIT,), endpoints=("create",)),
    ]
    async with Simulator(api_key=KEY, seed=17, faults=faults) as sim:
        outcomes = await run_job(sim, requests(800))
        assert_once_each(outcomes, 800)
        assert {o.status for o in outcomes} == {"ready"}
        sent = Counter(line_of(c) for c, _ in sent_lines(sim))
        assert set(sent.values()) == {1}  # an ambiguous create never made a twin
        assert sum(sim.stats.faults.values()) > 0


async def test_job_progress_reaches_telemetry_hooks_once_per_ended_batch() -> None:
    """Installed telemetry hooks get the job's totals each time one of its batches ends; the
    last report has every request ready and no batch active."""
    seen: list[JobProgress] = []

    class Recorder(TelemetryHooks):
        def job_progress(self, job: str, progress: JobProgress) -> None:
            seen.append(progress)

    set_telemetry_hooks(Recorder())
    try:
        async with Simulator(api_key=KEY, seed=3, max_active=5) as sim:
            outcomes = await run_job(sim, requests(40))
            batches = len(sim.batch_ids())
    finally:
        set_telemetry_hooks()
    assert_once_each(outcomes, 40)
    assert len(seen) == batches
    assert (seen[-1].items["ready"], seen[-1].batches_active) == (40, 0)
    assert seen[-1].batches_done == batches


async def test_run_cancel_on_the_command_line_cancels_the_jobs_batches(state: str) -> None:
    """`asyncbatch run --cancel --state URL` cancels the active batches of a job that was
    stopped, marks the rest canceled, and a rerun of the job delivers every request once,
    none of them sent again (on a SQLite and on a Redis state)."""
    async with Simulator(api_key=KEY, seed=17, item_seconds=60.0) as sim:
        async with (
            Client(api_key=KEY, base_url=sim.base_url) as client,
            client.jobs.run(requests(300), defaults=PROMPT, poll=FAST, state=state) as job,
        ):
            async for _ in job:
                break  # stopped once the first outcome is known, batches still running
        active = [b for b in sim.batch_ids() if sim.batch(b)["status"] == "processing"]
        created = len(sim.batch_ids())
        canceled = await cli("run", "--cancel", "--state", state, base_url=sim.base_url, key=KEY)
        assert canceled.status == 0, canceled.err
        assert f"run: canceled {len(active)} batch(es)" in canceled.err
        assert all(sim.batch(b)["status"] in ("canceling", "canceled") for b in active)
        outcomes = await run_job(sim, requests(300), state=state)
    assert active
    assert len(sim.batch_ids()) == created  # nothing was sent again after the cancel
    statuses = Counter(str(o.status) for o in outcomes)
    assert set(statuses) <= {"ready", "canceled"}
    assert statuses["canceled"] > 0
    # The outcome handed out before the stop was never acknowledged, so it comes again.
    assert_once_each(outcomes, 300)


@pytest.mark.parametrize(
    "state",
    ["sqlite:////proc/no-such-dir/job.db", "redis://127.0.0.1:1/0?socket_connect_timeout=1"],
)
async def test_a_state_that_cannot_be_opened_is_one_error_line_and_nothing_is_sent(
    state: str, tmp_path: Path
) -> None:
    """`asyncbatch run` with a state it cannot open (a directory it cannot make, a Redis server
    that is not there) exits with one error line naming the state, before any request."""
    source = tmp_path / "requests.jsonl"
    source.write_text('{"video": {"asset_id": "a"}}\n')
    async with Simulator(api_key=KEY, seed=1) as sim:
        out = tmp_path / "results.jsonl"
        args = [str(source), "--prompt", "Hi.", "--out", str(out), "--state", state, "--plain"]
        outcome = await cli("run", *args, base_url=sim.base_url)
        assert sim.stats.total_requests == 0
    assert outcome.status == 1
    assert outcome.err.count("\n") == 1
    assert "StateStoreError" in outcome.err
    assert "Traceback" not in outcome.err


async def test_a_second_run_on_a_state_in_use_is_refused_and_sends_nothing(
    state: str, tmp_path: Path
) -> None:
    """While a job runs on a state (SQLite or Redis), `asyncbatch run` on the same state exits
    with one error line and sends nothing; both writing outcomes would put every line in twice."""
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(f'{{"video": {{"asset_id": "a{n}"}}}}\n' for n in range(30)))
    async with Simulator(api_key=KEY, seed=3, item_seconds=60.0) as sim:
        async with (
            Client(api_key=KEY, base_url=sim.base_url) as client,
            client.jobs.run(source, defaults=PROMPT, poll=FAST, state=state) as job,
        ):
            await anext(job)  # its one batch has ended, so it creates no more
            created = sim.stats.requests["create"]
            args = ["--prompt", "Describe the video.", "--out", str(tmp_path / "out.jsonl")]
            second = await cli(
                "run", str(source), *args, "--state", state, base_url=sim.base_url, key=KEY
            )
            assert sim.stats.requests["create"] == created
        again = await cli(
            "run", str(source), *args, "--state", state, base_url=sim.base_url, key=KEY
        )
    assert second.status == 1
    assert "in use by another process" in second.err
    assert again.status == 0, again.err
