"""A newcomer's first hour: a live view that fits any terminal, and messages that say what to do.

Each test is named after what it proves; all run on virtual time against the simulator or
an unreachable loopback port.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from rich.console import Console

import asyncbatch
from asyncbatch import Batch, Event, EventKind, WaitTimeoutError
from asyncbatch._cli.board import Board
from asyncbatch._cli.render import NO_SUCH_BATCH
from asyncbatch._cli.view import (
    COMPLETED_WITH_FAILURES_STYLE,
    RICH_HINT,
    LiveView,
    PlainView,
    fit_columns,
    live_table,
    make_view,
)
from tests.test_cli_support import KEY, MISSING_ID, cli, simulator

pytestmark = pytest.mark.anyio

UNREACHABLE = "http://127.0.0.1:9/v1.3"
IDS = ("6a6c33815627a2798966f59e", "0472e4e4b6a2b5f68676ff6a", "12612cf808f1aa6853a9f979")


def _batch(
    batch_id: str, status: str, total: int, ready: int, failed: int, *, canceled: int = 0
) -> Batch:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return msgspec.convert(
        {
            "batch_id": batch_id,
            "status": status,
            "total_items": total,
            "ready_items": ready,
            "failed_items": failed,
            "canceled_items": canceled,
            "model_name": "pegasus1.5",
            "analysis_mode": "general",
            "created_at": created.isoformat(),
            "updated_at": created.isoformat(),
            "expires_at": (created + timedelta(days=1)).isoformat(),
        },
        Batch,
    )


def _board(names: bool = False) -> Board:
    board = Board()
    for number, batch_id in enumerate(IDS):
        board.add(batch_id, f"batch-{number}" if names else None)
    board.observe(Event(EventKind.SEEN, IDS[0], _batch(IDS[0], "processing", 400, 10, 2)), 0.0)
    board.observe(
        Event(EventKind.PROGRESS, IDS[0], _batch(IDS[0], "processing", 400, 100, 20)), 10.0
    )
    board.observe(Event(EventKind.SEEN, IDS[1], _batch(IDS[1], "processing", 40, 0, 0)), 0.0)
    board.observe(Event(EventKind.DONE, IDS[1], _batch(IDS[1], "completed", 40, 30, 10)), 10.0)
    return board


def _render(board: Board, width: int, *, no_color: bool = True) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, no_color=no_color)
    table, legend = live_table(board, width)
    console.print(table)
    console.print(legend)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 120, 160])
def test_live_table_fits_the_terminal_keeping_full_ids_status_done_failed_and_eta(
    width: int,
) -> None:
    """At any width from 80 columns the live table fits the terminal, never truncates an ID, and
    keeps the batch, status, done, failed and eta columns."""
    text = _render(_board(), width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    header = text.splitlines()[0].split()
    assert {"batch", "status", "done", "failed", "eta"} <= set(header)
    for batch_id in IDS:
        assert batch_id in text
    assert "processing" in text
    assert "completed" in text
    assert "120/400" in text


def test_live_table_keeps_a_bar_at_80_columns_and_every_column_at_160() -> None:
    """At 80 columns the progress bar still shows; at 160 every column does, in order."""
    assert "progress" in _render(_board(), 80).splitlines()[0]
    assert _render(_board(), 160).splitlines()[0].split() == [
        "batch", "status", "progress", "done", "ready", "failed", "canceled", "rate", "eta",
    ]  # fmt: skip


def test_columns_give_way_bar_first_then_ready_and_canceled() -> None:
    """As the width shrinks the bar narrows first, then optional columns such as `canceled` go,
    while batch, status, done, failed and eta stay."""
    widths = {"batch": 24, "status": 10, "progress": 0, "done": 7, "ready": 5, "failed": 6,
              "canceled": 8, "rate": 6, "eta": 3}  # fmt: skip
    wide, wide_bar = fit_columns(widths, 160)
    assert len(wide) == 9
    assert wide_bar == 30
    squeezed, bar = fit_columns(widths, 110)
    assert len(squeezed) == 9
    assert 10 <= bar < 30  # the bar shrank before any column went
    narrow, _ = fit_columns(widths, 80)
    assert "canceled" not in narrow
    assert {"batch", "status", "done", "failed", "eta"} <= set(narrow)


def test_bar_glyphs_are_distinct_without_colour() -> None:
    """Without colour the bar tells ready, failed, canceled and left apart by glyph, with a
    legend."""
    board = Board()
    board.add(IDS[0])
    batch = _batch(IDS[0], "canceling", 30, 10, 5, canceled=5)
    board.observe(Event(EventKind.SEEN, IDS[0], batch), 0.0)
    text = _render(board, 160, no_color=True)
    bar_line = text.splitlines()[1]
    for glyph in ("█", "x", "/", "·"):
        assert glyph in bar_line
    assert "█ ready  x failed  / canceled  · left" in text


def test_total_row_adds_the_items_of_every_batch_with_the_overall_rate() -> None:
    """The total row sums every batch's items and rate; with an open batch lacking a rate, the
    overall eta is unknown."""
    board = _board()
    totals = board.totals()
    assert (totals.total, totals.ready, totals.failed, totals.finished) == (440, 130, 30, 160)
    assert totals.rate == pytest.approx(148 / 10)  # items processed across batches per second
    assert totals.open == 2
    assert totals.eta is None  # one open batch has no rate yet
    total_line = next(line for line in _render(board, 160).splitlines() if line.startswith("total"))
    assert "160/440" in total_line
    assert "2 open" in total_line


def test_completed_with_failed_items_is_not_shown_green() -> None:
    """A `completed` batch with failed items gets the with-failures style, not the success one."""
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system="truecolor")
    table, _ = live_table(_board(), 160)
    console.print(table)
    completed = table.columns[1]._cells[1]  # the `completed` batch with 10 failed items
    assert str(completed) == "completed"
    assert completed.style == COMPLETED_WITH_FAILURES_STYLE  # type: ignore[union-attr]


def test_the_table_names_batches_that_have_names() -> None:
    """A batch with a name is shown by its name instead of its ID, in the table and the summary."""
    text = _render(_board(names=True), 80)
    assert "batch-0" in text
    assert IDS[0] not in text
    assert "  batch-0  " in "\n".join(_board(names=True).summary_lines(1.0))


def test_a_terminal_without_rich_gets_a_hint_to_install_the_cli_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal without rich the plain view is used and one hint says how to install the
    `cli` extra."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich.console", None)  # as if rich were not installed
    notes: list[str] = []
    view = make_view(Tty(), note=notes.append)
    assert isinstance(view, PlainView)
    assert notes == [RICH_HINT]
    assert "pip install -e '.[cli]'" in RICH_HINT


async def test_watch_against_an_unreachable_api_says_what_it_retries() -> None:
    """`watch` against an unreachable API says on stderr that it retries and why, and its summary
    names the time limit and the last failed request."""
    outcome = await cli("watch", "--plain", "--deadline", "30", "--max-failures", "50",
                        MISSING_ID, base_url=UNREACHABLE)  # fmt: skip
    assert outcome.status == 1
    retrying = [line for line in outcome.err.splitlines() if "retrying" in line]
    assert retrying
    assert "cannot reach the API" in retrying[0]
    summary = outcome.out.splitlines()[-2]
    assert "no final state within the watch's time limit of 30 s" in summary
    assert "the last failed request: APIConnectionError" in summary


async def test_live_view_shows_retries_under_the_table() -> None:
    """Recent failed requests show under the live table with their count and last cause, and stop
    showing once they are old."""
    board = _board()
    board.note_retries(3, "cannot reach the API: refused", 5.0)
    view = LiveView(io.StringIO())
    assert board.retrying(6.0)
    assert not board.retrying(100.0)
    console = Console(file=io.StringIO(), width=80, record=True)
    console.print(view._frame(board, 6.0))
    assert "retrying: 3 failed request(s) so far, the last: cannot reach the API" in (
        console.export_text()
    )


async def test_wait_timeout_names_the_batch_and_the_cause() -> None:
    """A `wait` timeout names the batch, the timeout, that it never answered and the last failed
    request."""
    async with asyncbatch.Client(api_key=KEY, base_url=UNREACHABLE) as client:
        with pytest.raises(WaitTimeoutError) as raised:
            await client.batches.wait(MISSING_ID, timeout=2)
    text = str(raised.value)
    assert text.startswith(f"batch {MISSING_ID} did not end within timeout=2 s (never answered)")
    assert "the last failed request: APIConnectionError" in text
    assert "deadline" not in text


async def test_adding_a_batch_that_already_ended_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`watcher.add` of a batch that already had its final event is not watched again and logs one
    warning saying to `discard()` it first."""
    async with simulator() as sim, asyncbatch.Client(api_key=KEY, base_url=sim.base_url) as client:
        batch_id = sim.create_batch(1)["batch_id"]
        async with client.watch([batch_id], stop_when_done=False) as watcher:
            async for event in watcher:
                if event.is_final:
                    break
            with caplog.at_level(logging.WARNING, logger="asyncbatch"):
                watcher.add(batch_id)
    assert [r.getMessage() for r in caplog.records] == [
        f"watcher.add({batch_id}): this batch already had its final event, so it is not "
        "watched again; discard() it first to watch it anew"
    ]


async def test_results_of_an_unfinished_batch_is_refused_unless_partial() -> None:
    """`results` of an unfinished batch exits 1 saying it is still pending and pointing at
    `--partial`, which prints what there is."""
    async with simulator() as sim:
        batch_id = sim.create_batch(3)["batch_id"]
        refused = await cli("results", batch_id, base_url=sim.base_url)
        partial = await cli("results", "--partial", batch_id, base_url=sim.base_url)
    assert refused.status == 1
    assert refused.out == ""
    assert f"batch {batch_id} is still pending" in refused.error_line()
    assert "--partial" in refused.error_line()
    assert partial.status == 0
    assert len(partial.out.splitlines()) == 3


async def test_the_same_404_reads_the_same_in_every_command() -> None:
    """status, results, cancel and delete of a missing batch all exit 1 with the same message."""
    async with simulator() as sim:
        outcomes = [
            await cli(command, MISSING_ID, base_url=sim.base_url)
            for command in ("status", "results", "cancel", "delete")
        ]
    for outcome in outcomes:
        assert outcome.status == 1
        assert outcome.error_line() == f"asyncbatch: error: {MISSING_ID}: {NO_SUCH_BATCH}"


async def test_a_mistyped_subcommand_gets_a_suggestion() -> None:
    """A mistyped subcommand exits 2 suggesting the nearest one."""
    outcome = await cli("wacth", MISSING_ID)
    assert outcome.status == 2
    assert "did you mean 'watch'?" in outcome.error_line()


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"]])
def test_a_closed_pipe_exits_zero_quietly(argv: list[str]) -> None:
    """Output into a pipe whose reader has gone exits 0 with nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # the reader already left, as `| head -1` does after its line
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "asyncbatch", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
            timeout=30,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    finally:
        os.close(write)
    assert done.returncode == 0
    assert done.stderr == b""


async def test_a_client_never_closed_warns_once_in_its_own_words() -> None:
    """A Client dropped unclosed gives one warning saying how to close it, and nothing reaches the
    loop's exception handler."""
    reported: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
    async with simulator() as sim:
        client = asyncbatch.Client(api_key=KEY, base_url=sim.base_url)
        await client.batches.retrieve(sim.create_batch(1)["batch_id"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client
            gc.collect()
    assert [str(w.message) for w in caught] == [
        "an asyncbatch.Client was never closed: use `async with Client() as client:` "
        "or `await client.aclose()`"
    ]
    assert reported == []  # nothing from aiohttp through the loop's exception handler
