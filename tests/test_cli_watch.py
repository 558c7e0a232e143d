"""`asyncbatch watch`, `create --watch`, `demo` and `simulate` through the real entry point,
on the in-process simulator in virtual time: events, views, summaries and exit statuses."""

from __future__ import annotations

import io
import json
import sys
from collections import defaultdict
from typing import Any

import anyio
import msgspec
import pytest

from asyncbatch import Batch
from asyncbatch._cli.main import run
from asyncbatch._events import STATUS_RANK
from tests.test_cli_support import KEY, MISSING_ID, Outcome, cli, simulator

pytestmark = pytest.mark.anyio

FAST = ("--interval", "1", "--max-interval", "5")
"""Poll options that keep a watch's event count small and its virtual run short."""


def _by_batch(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        events[line["batch_id"]].append(line)
    return events


def _check_event_stream(lines: list[dict[str, Any]]) -> None:
    """The watcher's invariants, read back from JSON Lines."""
    for batch_id, events in _by_batch(lines).items():
        kinds = [e["kind"] for e in events]
        assert [k in {"done", "gone", "error"} for k in kinds] == [False] * (len(kinds) - 1) + [
            True
        ]
        snapshots = [msgspec.convert(e["batch"], Batch) for e in events if e["batch"] is not None]
        assert all(b.batch_id == batch_id for b in snapshots)
        ranks = [STATUS_RANK[b.status] for b in snapshots]
        assert ranks == sorted(ranks)
        finished = [b.finished_items for b in snapshots]
        assert finished == sorted(finished)


async def test_watch_jsonl_follows_batches_to_completion() -> None:
    """--jsonl: an object per event, in order, ending in `done` equal to the API's final state."""
    async with simulator() as sim:
        ids = [sim.create_batch(n)["batch_id"] for n in (3, 6)]
        outcome = await cli("watch", "--jsonl", *FAST, *ids, base_url=sim.base_url)
        final = {batch_id: msgspec.convert(sim.batch(batch_id), Batch) for batch_id in ids}
    assert outcome.status == 0
    lines = outcome.json_lines()
    assert all(set(line) == {"kind", "batch_id", "batch", "error"} for line in lines)
    _check_event_stream(lines)
    events = _by_batch(lines)
    assert set(events) == set(ids)
    for batch_id, batch_events in events.items():
        assert batch_events[0]["kind"] == "seen"
        assert batch_events[-1]["kind"] == "done"
        assert batch_events[-1]["error"] is None
        assert msgspec.convert(batch_events[-1]["batch"], Batch) == final[batch_id]
    assert any(line["kind"] == "progress" for line in lines)


async def test_watch_exit_status_is_1_when_items_failed() -> None:
    """A batch that completed with failed items is not success: exit 1, and the view says why."""
    async with simulator(item_failure_rate=0.5) as sim:
        batch_id = sim.create_batch(8)["batch_id"]
        outcome = await cli("watch", *FAST, batch_id, base_url=sim.base_url)
        failed = sim.batch(batch_id)["failed_items"]
    assert failed > 0
    assert outcome.status == 1
    assert f"completed with {failed} failed item(s)" in outcome.out
    assert "0 of 1 batch(es) succeeded" in outcome.out


async def test_watch_exit_status_is_1_for_canceled_and_gone() -> None:
    """A canceled batch and an unknown ID: both final (`done`, `gone`), exit 1."""
    async with simulator() as sim:
        batch_id = sim.create_batch(8)["batch_id"]
        sim.cancel_batch(batch_id)
        outcome = await cli("watch", "--jsonl", *FAST, batch_id, MISSING_ID, base_url=sim.base_url)
    assert outcome.status == 1
    finals = {b: events[-1] for b, events in _by_batch(outcome.json_lines()).items()}
    assert finals[batch_id]["kind"] == "done"
    assert finals[batch_id]["batch"]["status"] == "canceled"
    assert finals[MISSING_ID]["kind"] == "gone"
    assert finals[MISSING_ID]["batch"] is None
    assert finals[MISSING_ID]["error"].startswith("NotFoundError: ")


async def test_watch_deadline_ends_open_batches_with_an_error_event() -> None:
    """--deadline: a batch still running gets an `error` event naming the deadline; exit 1."""
    async with simulator(item_seconds=600.0) as sim:
        batch_id = sim.create_batch(8)["batch_id"]
        outcome = await cli("watch", "--jsonl", "--deadline", "30", batch_id, base_url=sim.base_url)
    assert outcome.status == 1
    last = outcome.json_lines()[-1]
    assert (last["kind"], last["batch_id"]) == ("error", batch_id)
    assert last["error"].startswith("WaitTimeoutError: ")
    assert "30 s" in last["error"]


async def test_watch_plain_view_prints_events_and_a_summary() -> None:
    """Without a terminal: a line per event with a text bar, then the summary; exit 0."""
    async with simulator() as sim:
        batch_id = sim.create_batch(4)["batch_id"]
        outcome = await cli("watch", *FAST, batch_id, base_url=sim.base_url)
    assert outcome.status == 0
    lines = outcome.out.splitlines()
    assert lines[0] == "watching 1 batch(es)"
    done = next(line for line in lines if line.startswith(f"{batch_id}  done"))
    assert "[########################]" in done
    assert "4/4 done (ready 4, failed 0, canceled 0)" in done
    assert lines[-2] == f"  {batch_id}  succeeded  4/4 done (ready 4, failed 0, canceled 0)"
    assert lines[-1] == "1 of 1 batch(es) succeeded; items: 4 ready, 0 failed, 0 canceled"
    assert "\x1b[" not in outcome.out


async def test_watch_all_active_follows_the_active_batches_only() -> None:
    """--all-active adds every pending/processing/canceling batch, and not the finished ones."""
    async with simulator() as sim:
        finished = sim.create_batch(2)["batch_id"]
        sim.age_batch(finished, 3600)
        active = {sim.create_batch(n)["batch_id"] for n in (2, 3)}
        outcome = await cli("watch", "--all-active", "--jsonl", *FAST, base_url=sim.base_url)
        nothing = await cli("watch", "--all-active", base_url=sim.base_url)
    assert outcome.status == 0
    assert set(_by_batch(outcome.json_lines())) == active
    assert (nothing.status, nothing.out, nothing.err.strip()) == (
        0,
        "",
        "no active batches to watch",
    )


async def test_watch_connection_refused_gives_up_after_max_failures() -> None:
    """An unreachable API: each batch ends in an `error` event after --max-failures; exit 1."""
    outcome = await cli(
        "watch", "--jsonl", "--max-failures", "2", MISSING_ID, base_url="http://127.0.0.1:9/v1.3"
    )
    assert outcome.status == 1
    (line,) = outcome.json_lines()
    assert line["kind"] == "error"
    assert line["error"].startswith("APIConnectionError: ")


async def test_create_watch_prints_the_id_then_follows_it() -> None:
    """create --watch --jsonl: the ID on the first line, then the batch's events to `done`."""
    request = {"video": {"type": "asset_id", "asset_id": "a-1"}, "custom_id": "one"}
    async with simulator() as sim:
        outcome = await cli(
            "create", "-", "--prompt", "Summarise.", "--watch", "--jsonl", *FAST,
            stdin=json.dumps(request), base_url=sim.base_url,
        )  # fmt: skip
    assert outcome.status == 0
    first, *rest = outcome.out.splitlines()
    events = [json.loads(line) for line in rest]
    assert {e["batch_id"] for e in events} == {first}
    assert events[-1]["kind"] == "done"
    assert events[-1]["batch"]["ready_items"] == 1


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal, as a pty would."""

    def isatty(self) -> bool:
        return True


async def test_live_view_draws_a_table_on_a_terminal() -> None:
    """On a terminal the live view redraws a rich table in place, then prints the summary."""
    async with simulator(item_failure_rate=0.3, item_seconds=1.0) as sim:
        batch_id = sim.create_batch(6)["batch_id"]
        out, err = _Terminal(), io.StringIO()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        status = await run(["watch", *FAST, batch_id], out, err, env=env)
    text = out.getvalue()
    assert status in {0, 1}
    assert "\x1b[" in text  # cursor movement: redrawn in place
    assert "asyncbatch watch: 1 batch(es)" in text
    assert "█" in text
    assert "Summary: 1 batch(es) watched" in text
    assert KEY not in text + err.getvalue()


async def test_without_rich_a_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich is an optional extra: when it cannot be imported, the view falls back to plain lines."""
    for name in [n for n in sys.modules if n == "rich" or n.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what `import rich` sees when not installed
    monkeypatch.setitem(sys.modules, "rich", None)
    async with simulator() as sim:
        batch_id = sim.create_batch(2)["batch_id"]
        out, err = _Terminal(), io.StringIO()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        status = await run(["watch", *FAST, batch_id], out, err, env=env)
    assert status == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "watching 1 batch(es)"
    assert "\x1b[" not in out.getvalue()
    assert lines[-1] == "1 of 1 batch(es) succeeded; items: 2 ready, 0 failed, 0 canceled"


async def test_demo_runs_to_the_end_without_a_key() -> None:
    """demo: no key needed; five batches, one canceled midway, the summary, the real-API hint."""
    outcome = await cli("demo", "--plain", key=None)
    assert outcome.status == 0
    assert outcome.err.count("demo: created batch") == 5
    summary = outcome.out[outcome.out.index("Summary: 5 batch(es)") :].splitlines()
    outcomes = [line.split()[1] for line in summary[1:6]]
    assert outcomes.count("canceled") == 1
    assert "succeeded" in outcomes
    assert "completed" in outcomes  # a batch with failed items
    assert "To do the same against the real API" in outcome.err


async def test_demo_jsonl_and_its_key_stays_hidden() -> None:
    """demo --jsonl prints only events, every batch reaches `done`; a given key is never shown."""
    outcome = await cli("demo", "--jsonl", "--api-key", KEY, key=None)
    assert outcome.status == 0
    lines = outcome.json_lines()
    _check_event_stream(lines)
    finals = [events[-1] for events in _by_batch(lines).values()]
    assert [f["kind"] for f in finals] == ["done"] * 5
    assert sorted(f["batch"]["status"] for f in finals) == ["canceled"] + ["completed"] * 4


async def test_demo_and_simulate_neither_list_nor_take_a_base_url() -> None:
    """They serve their own API: --base-url is not in their help, and is an unknown option."""
    for command in ("demo", "simulate"):
        shown = await cli(command, "--help", key=None)
        assert "--api-key" in shown.out
        assert "--base-url URL" not in shown.out
        outcome = await cli(command, "--base-url", "http://127.0.0.1:9/v1.3", key=None)
        assert outcome.status == 2
        assert "unrecognized arguments: --base-url" in outcome.error_line()


class _Announcing(io.StringIO):
    """A captured stream that signals once a whole line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.line_written = anyio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "\n" in text:
            self.line_written.set()
        return written


async def _serve_and_use(argv: list[str], key: str | None = KEY) -> tuple[str, Outcome, Outcome]:
    """Run `simulate ARGV` until its URL is printed, then create and list a batch through it."""
    out, err = _Announcing(), io.StringIO()
    statuses: list[int] = []
    env = {} if key is None else {"TWELVELABS_API_KEY": key}

    async def serve() -> None:
        statuses.append(await run(["simulate", *argv], out, err, env=env))

    request = {"video": {"type": "asset_id", "asset_id": "a-1"}}
    async with anyio.create_task_group() as group:
        group.start_soon(serve)
        await out.line_written.wait()
        url = out.getvalue().strip()
        created = await cli("create", "-", "--prompt", "Hi.", stdin=json.dumps(request),
                            base_url=url)  # fmt: skip
        listed = await cli("list", "--json", base_url=url)
        group.cancel_scope.cancel()
    assert statuses == []  # served until cancelled
    assert KEY not in out.getvalue() + err.getvalue()
    return url, created, listed


async def test_simulate_serves_until_stopped_and_prints_its_url() -> None:
    """simulate prints its base URL on stdout; the other commands work against it with the key."""
    url, created, listed = await _serve_and_use(
        ["--port", "0", "--seed", "2", "--time-scale", "10", "--item-failure-rate", "0.1"]
    )
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1.3")
    assert created.status == listed.status == 0
    assert [b["batch_id"] for b in listed.json_lines()] == [created.out.strip()]


async def test_simulate_needs_a_key_and_a_free_port() -> None:
    """simulate without a key is a usage error; on a port already taken, one line and exit 1."""
    no_key = await cli("simulate", "--port", "0", key=None)
    async with simulator() as sim:
        port = sim.base_url.split(":")[2].split("/")[0]
        taken = await cli("simulate", "--port", port)
    assert no_key.status == 2
    assert "no API key" in no_key.error_line()
    assert taken.status == 1
    assert f"cannot serve on 127.0.0.1:{port}" in taken.error_line()
