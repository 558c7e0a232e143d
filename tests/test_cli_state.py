"""`asyncbatch watch --state URL [--replica]` through the real entry point, on the simulator in
virtual time: restarts on one SQLite file resume without repeating acknowledged events,
a line that was not written is not acknowledged, usage errors, --rate, log lines, and a
replica on a real redis-server."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from asyncbatch import Batch, Event, EventKind
from asyncbatch._cli.board import Board, Verdict
from asyncbatch._cli.main import run
from asyncbatch.redis import RedisStore
from asyncbatch.testing import Simulator
from tests.test_cli_render import _batch
from tests.test_cli_support import KEY, cli, simulator
from tests.test_cli_webhooks import free_port

pytestmark = pytest.mark.anyio

FAST = ("--interval", "1", "--max-interval", "5")
"""Poll options that keep a watch's event count small and its virtual run short."""


def _state(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'watch.db'}"  # tmp_path is absolute: sqlite:////tmp/...


def _of(lines: list[dict[str, Any]], batch_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["batch_id"] == batch_id]


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal, as a pty would."""

    def isatty(self) -> bool:
        return True


class _BreaksOnFlush(io.StringIO):
    """Standard output whose reader leaves when the line ending ``batch_id`` is flushed."""

    def __init__(self, batch_id: str) -> None:
        super().__init__()
        self._batch_id = batch_id

    def flush(self) -> None:
        last = json.loads(self.getvalue().splitlines()[-1])
        if (last["kind"], last["batch_id"]) == ("done", self._batch_id):
            raise BrokenPipeError(32, "Broken pipe")


async def test_sqlite_restart_resumes_and_reports_only_what_changed(tmp_path: Path) -> None:
    """A second run on the same file watches only the unfinished batch, starts from its
    acknowledged snapshot (no `seen`), reports the cancel made in between, and never
    repeats the finished batch; an ID given whose end was acknowledged gets no event."""
    state = _state(tmp_path)
    async with simulator() as sim:
        # Large enough never to finish here: waiting on SQLite's worker thread, the virtual
        # clock jumps to the next timer (aiohttp keep-alives among them), so how much
        # simulated time passes between runs is not fixed.
        small, large = (sim.create_batch(n)["batch_id"] for n in (2, 1000))
        first = await cli(
            "watch", "--jsonl", *FAST, "--deadline", "40", "--state", state, small, large,
            base_url=sim.base_url,
        )  # fmt: skip
        sim.cancel_batch(large)
        second = await cli("watch", "--jsonl", *FAST, "--state", state, base_url=sim.base_url)
        third = await cli("watch", "--plain", "--state", state, small, base_url=sim.base_url)
        fourth = await cli("watch", "--jsonl", "--state", state, base_url=sim.base_url)
        requests = sim.stats.total_requests
    assert first.status == 1  # the deadline ended the large batch's watch
    assert [e["kind"] for e in _of(first.json_lines(), small)][-1] == "done"
    assert [e["kind"] for e in _of(first.json_lines(), large)][-1] == "error"
    shown_before = [e["batch"] for e in _of(first.json_lines(), large) if e["batch"]][-1]
    assert shown_before["status"] == "processing"

    assert second.status == 1, second.err  # canceled is not success
    assert "resuming 1 unfinished batch(es)" in second.err
    lines = second.json_lines()
    assert {line["batch_id"] for line in lines} == {large}
    assert lines[0]["kind"] in {"status", "done"}  # a change from the acknowledged snapshot
    assert lines[0]["batch"] != shown_before
    assert (lines[-1]["kind"], lines[-1]["batch"]["status"]) == ("done", "canceled")

    assert third.status == 0, third.err
    assert f"  {small}  succeeded (reported earlier)" in third.out
    assert not [line for line in third.out.splitlines() if line.startswith(small)]

    assert (fourth.status, fourth.out) == (0, "")
    assert "nothing to watch: no unfinished batches" in fourth.err
    assert requests > 0


async def test_a_line_that_was_not_flushed_is_not_acknowledged(tmp_path: Path) -> None:
    """The reader leaves while the small batch's `done` is being flushed: the next run on the
    store delivers that `done` again, and continues the large batch after its last line."""
    state = _state(tmp_path)
    async with simulator() as sim:
        small, large = (sim.create_batch(n)["batch_id"] for n in (2, 12))
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        out, err = _BreaksOnFlush(small), io.StringIO()
        argv = ["watch", "--jsonl", *FAST, "--state", state, small, large]
        with pytest.raises(BrokenPipeError):
            await run(argv, out, err, env=env)
        again = await cli("watch", "--jsonl", *FAST, "--state", state, base_url=sim.base_url)
    shown = [json.loads(line) for line in out.getvalue().splitlines()]
    assert shown[-1]["batch_id"] == small
    assert again.status == 0, again.err
    resumed = again.json_lines()
    assert [e["kind"] for e in _of(resumed, small)] == ["done"]  # at least once, not lost
    assert _of(resumed, small)[0]["batch"] == shown[-1]["batch"]
    large_before = _of(shown, large)
    large_after = _of(resumed, large)
    assert large_before
    assert large_after[0]["kind"] != "seen"
    assert large_after[0]["batch"] != large_before[-1]["batch"]
    assert large_after[-1]["kind"] == "done"


async def test_live_view_shows_resumed_batches_it_was_not_given(tmp_path: Path) -> None:
    """With --state and no IDs, the live table has a row for the batch resumed from the store."""
    state = _state(tmp_path)
    async with simulator() as sim:
        batch_id = sim.create_batch(12)["batch_id"]
        first = await cli(
            "watch", "--plain", *FAST, "--deadline", "5", "--state", state, batch_id,
            base_url=sim.base_url,
        )  # fmt: skip
        out, err = _Terminal(), io.StringIO()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        status = await run(["watch", *FAST, "--state", state], out, err, env=env)
    assert first.status == 1
    assert status == 0, err.getvalue()
    assert "asyncbatch watch: 1 batch(es)" in out.getvalue()
    assert f"  {batch_id}  succeeded  12/12 done" in out.getvalue()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.org/state", "unsupported state URL"),
        ("sqlite://host/watch.db", "sqlite:///relative.db"),
        ("sqlite:///watch.db?synchronous=OFF", "synchronous must be FULL or NORMAL"),
    ],
)
async def test_a_bad_state_url_is_a_usage_error(url: str, says: str) -> None:
    """A --state URL that names no store: exit 2 and one line saying which forms exist."""
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        outcome = await cli("watch", "--state", url, batch_id, base_url=sim.base_url)
        requests = sim.stats.total_requests
    assert outcome.status == 2
    assert outcome.error_line().startswith("asyncbatch: error: watch: --state: ")
    assert says in outcome.error_line()
    assert (outcome.out, requests) == ("", 0)


async def test_an_unreadable_sqlite_store_is_one_error_line(tmp_path: Path) -> None:
    """A SQLite file that cannot be opened fails before the watch starts: exit 1, one line."""
    missing = tmp_path / "no-such-directory" / "watch.db"
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        outcome = await cli(
            "watch", "--state", f"sqlite:///{missing}", batch_id, base_url=sim.base_url
        )
    assert outcome.status == 1
    assert "cannot read the state store" in outcome.error_line()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--replica"], "--replica needs --state redis://"),
        (["--replica", "--state", "memory://"], "--replica needs a redis:// --state"),
        (["--replica", "--state", "sqlite:///w.db"], "--replica needs a redis:// --state"),
        (["--lease", "5"], "--lease only applies with --replica"),
        (["--owner", "a", "--state", "memory://"], "--owner only applies with --replica"),
        (["--burst", "5"], "--burst needs --rate"),
    ],
)
async def test_replica_options_without_a_redis_replica_are_usage_errors(
    argv: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--replica needs a redis:// state; --owner and --lease need --replica: exit 2, one line,
    and nothing written (``sqlite:///w.db`` is relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        outcome = await cli("watch", *argv, batch_id, base_url=sim.base_url)
        requests = sim.stats.total_requests
    assert outcome.status == 2
    assert says in outcome.error_line()
    assert requests == 0
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - one listing of a tmp directory


async def test_replica_with_a_sqlite_url_creates_no_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``watch --replica --state sqlite:///w.db`` is refused before the store is read, so no
    ``w.db`` appears in the working directory; without --replica the same URL does create it
    (the check sees the file a read makes)."""
    monkeypatch.chdir(tmp_path)
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        refused = await cli(
            "watch", "--replica", "--state", "sqlite:///w.db", batch_id, base_url=sim.base_url
        )
        assert refused.status == 2
        assert not (tmp_path / "w.db").exists()
        watched = await cli("watch", "--state", "sqlite:///w.db", batch_id, base_url=sim.base_url)
    assert watched.status == 0
    assert (tmp_path / "w.db").exists()


async def test_state_without_ids_needs_no_id() -> None:
    """--state alone is a complete watch (resume everything); without it, an ID is required."""
    async with simulator() as sim:
        empty = await cli("watch", "--state", "memory://", base_url=sim.base_url)
        none = await cli("watch", base_url=sim.base_url)
    assert empty.status == 0
    assert "nothing to watch" in empty.err
    assert none.status == 2
    assert "--state" in none.error_line()


async def test_rate_without_replica_limits_this_watcher() -> None:
    """--rate/--burst without --replica is the watcher's own budget: polls stay within it."""
    async with simulator(item_seconds=1.0) as sim:  # always changing: polled every second
        ids = [sim.create_batch(400)["batch_id"] for _ in range(2)]
        limited = await cli(
            "watch", "--jsonl", *FAST, "--deadline", "20", "--rate", "0.2", "--burst", "1", *ids,
            base_url=sim.base_url,
        )  # fmt: skip
        used = sim.stats.total_requests
        free = await cli("watch", "--jsonl", *FAST, "--deadline", "20", *ids, base_url=sim.base_url)
        unlimited = sim.stats.total_requests - used
    assert limited.status == free.status == 1  # both stopped by the deadline
    assert used <= 1 + 0.2 * 20
    assert unlimited > 2 * used


async def _watch_with_refused_deliveries(stdout: io.StringIO, view: str) -> tuple[int, str]:
    """Watch one batch with a webhook endpoint whose every delivery has the wrong secret."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/twelvelabs"
    secret = "whsec-cli-state-test"
    async with Simulator(
        api_key=KEY, seed=3, item_seconds=10.0, webhook_urls=[url], webhook_secret="other"
    ) as sim:
        batch_id = sim.create_batch(8)["batch_id"]
        argv = ["watch", *view.split(), *FAST, "--webhook-port", str(port), batch_id]
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        err = io.StringIO()
        status = await run([*argv, "--webhook-secret", secret], stdout, err, env=env)
    return status, err.getvalue()


async def test_plain_view_writes_log_warnings_on_stderr() -> None:
    """Refused webhook deliveries are logged at WARNING: without a live view, as
    `asyncbatch: warning:` lines on stderr, never among the event lines."""
    out = io.StringIO()
    status, err = await _watch_with_refused_deliveries(out, "--plain")
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("asyncbatch: warning: ")]
    assert warnings
    assert all("webhook delivery refused (401)" in line for line in warnings)
    assert "refused" not in out.getvalue()


async def test_live_view_shows_log_warnings_above_its_table() -> None:
    """Under the live view the same warnings are printed through it, above the table, and
    counted in its title; nothing is written to stderr in between to break the display."""
    out = _Terminal()
    status, err = await _watch_with_refused_deliveries(out, "")
    assert status == 0, err
    assert "webhook delivery refused (401)" in out.getvalue()
    assert "log line(s) above" in out.getvalue()
    assert "webhook delivery refused" not in err
    assert "receiving webhooks at" in err  # said before the table appeared


def _redis_state(redis_url: str, prefix: str) -> str:
    """A --state URL on the test server, with keys of its own and no socket timeouts: on
    the virtual clock a timeout is a timer the loop may jump to while Redis answers."""
    return f"{redis_url}?prefix={prefix}&socket_timeout=1e6&socket_connect_timeout=1e6"


async def test_replica_on_redis_runs_until_its_deadline(redis_url: str) -> None:
    """A --replica watch takes the leases of both batches, spends the fleet budget from the
    Redis gate, stops at --deadline leaving the open batch unacknowledged for another replica,
    and a second replica then resumes only that batch, from its acknowledged snapshot, and
    reports its cancel."""
    prefix = f"test:{uuid.uuid4().hex}:"
    state = _redis_state(redis_url, prefix)
    replica = ["--replica", "--lease", "15", "--rate", "1", "--burst", "500"]
    # One item at a time: the large batch needs hours of simulated time, far more than
    # the clock can skip while Redis answers.
    async with simulator(items_at_once=1) as sim:
        small, large = (sim.create_batch(n)["batch_id"] for n in (1, 1000))
        first = await cli(
            "watch", "--jsonl", *FAST, "--state", state, *replica, "--owner", "replica-a",
            "--deadline", "60", small, large, base_url=sim.base_url,
        )  # fmt: skip
        requests = sim.stats.total_requests
        client = Redis.from_url(redis_url, socket_timeout=None, socket_connect_timeout=None)
        try:
            tokens = float(await client.hget(f"{prefix}gate:bucket", "tokens") or -1)
            records = {r.batch_id: r for r in await RedisStore(client, prefix=prefix).load()}
            sim.cancel_batch(large)
            second = await cli(
                "watch", "--jsonl", *FAST, "--state", state, *replica, "--owner", "replica-b",
                "--deadline", "600", base_url=sim.base_url,
            )  # fmt: skip
        finally:
            await client.aclose()
    assert first.status == 1, first.err  # the large batch was still open at the deadline
    assert "watch: replica replica-a on redis://127.0.0.1:" in first.err
    kinds = {b: [e["kind"] for e in _of(first.json_lines(), b)] for b in (small, large)}
    assert kinds[small][-1] == "done"
    assert kinds[large][-1] == "error"
    # Every request went through the shared bucket (refilled at 1/s of real time meanwhile).
    # A worker that had taken its token when the deadline cancelled it sends nothing: up to
    # one token per worker (8) may be spent without a request, never a request without one.
    assert requests - 5 <= 500 - tokens <= requests + 8
    assert records[small].final
    assert not records[large].final  # the deadline is this replica's, not the batch's end
    assert second.status == 1, second.err  # canceled is not success
    resumed = second.json_lines()
    assert {e["batch_id"] for e in resumed} == {large}
    assert resumed[0]["kind"] != "seen"
    assert (resumed[-1]["kind"], resumed[-1]["batch"]["status"]) == ("done", "canceled")


async def test_watch_help_explains_state_and_replicas() -> None:
    """`watch --help` lists the durable options and shows a resume and a replica example."""
    out, err = io.StringIO(), io.StringIO()
    status = await run(["watch", "--help"], out, err, env={})
    text = out.getvalue()
    assert status == 0
    for option in (
        "--state URL",
        "--replica",
        "--owner NAME",
        "--lease S",
        "--rate R",
        "--burst N",
    ):
        assert option in text
    assert "asyncbatch watch --jsonl --state sqlite:///watch.db >> events.jsonl" in text
    assert "--state redis://redis.internal:6379/0 --replica \\" in text


async def test_a_password_in_the_state_url_is_never_printed() -> None:
    """A Redis password in --state appears nowhere, not even in the error for an unreachable
    server (nothing listens on port 1)."""
    password = "redis-pass-7f3a9c"
    async with simulator() as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        url = f"redis://:{password}@127.0.0.1:1/0"
        outcome = await cli("watch", "--state", url, "--replica", batch_id, base_url=sim.base_url)
    assert outcome.status == 1
    assert "cannot read the state store redis://***@127.0.0.1:1/0" in outcome.error_line()
    assert password not in outcome.out + outcome.err


def _snapshot(batch_id: str, status: str, ready: int) -> Batch:
    return msgspec.structs.replace(_batch(status, total=4, ready_items=ready), batch_id=batch_id)


def test_a_replica_answers_only_for_the_batches_it_ended_or_gave_up() -> None:
    """A replica's board: a batch left without a final event went to another replica, so it
    neither fails the exit status nor counts in the totals; a plain watch counts it open."""
    ended, moved = "a" * 24, "b" * 24
    events = [
        Event(EventKind.SEEN, ended, _snapshot(ended, "processing", 1)),
        Event(EventKind.SEEN, moved, _snapshot(moved, "processing", 2)),
        Event(EventKind.DONE, ended, _snapshot(ended, "completed", 4)),
    ]
    boards = {replica: Board(replica=replica) for replica in (True, False)}
    for board in boards.values():
        for at, event in enumerate(events):
            board.observe(event, float(at))
    assert boards[True].verdict() is Verdict.SUCCEEDED
    assert boards[False].verdict() is Verdict.FAILED
    summary = boards[True].summary_lines(3.0)
    assert f"  {moved}  handed over to another replica  2/4 done" in "\n".join(summary)
    assert (
        summary[-1]
        == "1 of 1 batch(es) succeeded (1 handed over); items: 4 ready, 0 failed, 0 canceled"
    )
    assert "still open when the watch stopped" in "\n".join(boards[False].summary_lines(3.0))
