"""The command line's pure parts: JSON of events, bars, durations, the board's rates, ETAs,
exit statuses and summary, and the scrubbing of secrets."""

from __future__ import annotations

import ast
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncbatch._cli
from asyncbatch import AuthenticationError, Batch, Client, Event, EventKind, NotFoundError
from asyncbatch._cli.board import Board, Verdict
from asyncbatch._cli.io import Streams, argv_secrets
from asyncbatch._cli.render import (
    duration_text,
    event_json,
    json_line,
    rate_text,
    segment_cells,
    text_bar,
)
from tests.test_cli_support import KEY, MISSING_ID, simulator

ID = "68f4ddaf8aaa60d33df0e800"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(status: str = "processing", total: int = 10, **counters: int) -> Batch:
    finished = sum(counters.get(k, 0) for k in ("ready_items", "failed_items", "canceled_items"))
    fields: dict[str, Any] = counters
    return Batch(
        batch_id=ID,
        status=status,
        analysis_mode="general",
        model_name="pegasus1.5",
        total_items=total,
        created_at=T0,
        expires_at=T0,
        queued_items=total - finished,
        **fields,
    )


def _auth_error() -> AuthenticationError:
    return AuthenticationError(
        status=401, code="api_key_invalid", message="bad key", headers={}, method="GET", url="u"
    )


@given(
    total=st.integers(1, 2000),
    parts=st.tuples(*[st.integers(0, 2000)] * 3),
    width=st.integers(3, 60),
)
def test_segment_cells_fill_the_width_and_show_every_kind(
    total: int, parts: tuple[int, int, int], width: int
) -> None:
    """Cells always sum to the width; any ready/failed/canceled item shows; a full batch fills."""
    ready, failed, canceled = parts
    if ready + failed + canceled > total:
        ready, failed, canceled = (n * total // max(1, sum(parts)) for n in parts)
    batch = _batch(total=total, ready_items=ready, failed_items=failed, canceled_items=canceled)
    cells = segment_cells(batch, width)
    assert sum(cells) == width
    assert all(c > 0 for c, n in zip(cells[:3], (ready, failed, canceled), strict=True) if n)
    assert all(c == 0 for c, n in zip(cells[:3], (ready, failed, canceled), strict=True) if not n)
    if batch.finished_items == total:
        assert cells[3] == 0


def test_text_bar_shows_kinds_apart() -> None:
    """The plain bar draws ready, failed, canceled and unfinished items with distinct marks."""
    bar = text_bar(_batch(total=8, ready_items=4, failed_items=1, canceled_items=1), width=8)
    assert bar == "[####x-..]"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (-1.0, "-"), (float("inf"), "-"), (0.4, "0s"), (42.0, "42s"), (185.0, "3m05s"),
     (7440.0, "2h04m")],
)  # fmt: skip
def test_duration_text(seconds: float | None, text: str) -> None:
    """Durations read as seconds, minutes or hours; unknown ones as a dash."""
    assert duration_text(seconds) == text


def test_rate_text_picks_a_readable_unit() -> None:
    """Fast rates per second, slow ones per minute, none as a dash."""
    assert [rate_text(r) for r in (None, 0.0, 2.5, 0.05)] == ["-", "-", "2.5/s", "3.0/min"]


def test_rate_and_eta_come_from_items_processed_since_the_first_snapshot() -> None:
    """Rate: items ready or failed since first seen over time since; ETA: remaining over rate."""
    board = Board()
    board.observe(Event(EventKind.SEEN, ID, _batch(ready_items=2)), now=100.0)
    row = board.observe(Event(EventKind.PROGRESS, ID, _batch(ready_items=5, failed_items=1)), 108.0)
    assert row.rate == pytest.approx(0.5)
    assert row.eta == pytest.approx(8.0)
    row = board.observe(Event(EventKind.STATUS, ID, _batch("canceling", ready_items=6)), 110.0)
    assert row.eta is None  # canceled items stop at once, not at the rate
    row = board.observe(
        Event(EventKind.DONE, ID, _batch("canceled", ready_items=6, canceled_items=4)), 112.0
    )
    assert row.eta is None
    assert row.rate == pytest.approx(4 / 12)  # the canceled items do not count


def test_no_rate_before_anything_moved() -> None:
    """One snapshot, or several without progress, give no rate and no ETA."""
    board = Board()
    row = board.observe(Event(EventKind.SEEN, ID, _batch(ready_items=3)), now=5.0)
    assert (row.rate, row.eta) == (None, None)
    row = board.observe(Event(EventKind.STATUS, ID, _batch(ready_items=3)), now=9.0)
    assert (row.rate, row.eta) == (None, None)


def _final_board(*events: Event) -> Board:
    board = Board()
    for n, event in enumerate(events):
        board.observe(event, now=float(n))
    return board


def test_verdict_rules() -> None:
    """Succeeded only when every batch completed with all items ready; a refused key over all."""
    good = Event(EventKind.DONE, ID, _batch("completed", ready_items=10))
    failed = Event(EventKind.DONE, ID, _batch("completed", ready_items=9, failed_items=1))
    canceled = Event(EventKind.DONE, ID, _batch("canceled", ready_items=2, canceled_items=8))
    error = NotFoundError(status=404, code=None, message=None, headers={}, method="GET", url="u")
    gone = Event(EventKind.GONE, ID, error=error)
    auth = Event(EventKind.ERROR, ID, error=_auth_error())
    assert _final_board(good).verdict() is Verdict.SUCCEEDED
    assert _final_board().verdict() is Verdict.SUCCEEDED
    assert [_final_board(e).verdict() for e in (failed, canceled, gone)] == [Verdict.FAILED] * 3
    assert _final_board(auth).verdict() is Verdict.KEY_REFUSED
    assert (
        _final_board(Event(EventKind.SEEN, ID, _batch())).verdict() is Verdict.FAILED
    )  # never ended


def _numbered_statuses(tree: ast.AST) -> list[str]:
    """Where ``tree`` defines an ``EXIT_`` name, returns an int literal or gives one to
    `CommandError`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id.startswith("EXIT_"):
                found.append(f"defines {node.id}")
        elif isinstance(node, ast.Return) and _is_int(node.value):
            found.append(f"line {node.lineno}: returns a number")
        elif _is_command_error(node) and any(_is_int(a) for a in node.args[1:]):
            found.append(f"line {node.lineno}: CommandError with a number")
    return found


def _is_command_error(node: ast.AST) -> TypeGuard[ast.Call]:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CommandError"


def _is_int(node: ast.AST | None) -> bool:
    if isinstance(node, ast.IfExp):  # `return 0 if ok else 1`
        return _is_int(node.body) or _is_int(node.orelse)
    value = node.value if isinstance(node, ast.Constant) else None
    return isinstance(value, int) and not isinstance(value, bool)


def test_the_finder_of_numbered_statuses_sees_each_kind() -> None:
    """The scan below would pass vacuously if it saw nothing: it sees each form, and no name."""
    source = (
        "EXIT_X = 3\ndef f():\n    return 0\n    return OK if a else 1\n"
        "raise CommandError('m', 2)\n"
    )
    assert _numbered_statuses(ast.parse(source)) == [
        "defines EXIT_X",
        "line 3: returns a number",
        "line 4: returns a number",
        "line 5: CommandError with a number",
    ]
    assert _numbered_statuses(ast.parse("def f():\n    return EXIT_OK\nf(1)\n")) == []


def test_exit_statuses_are_numbered_only_in_the_exits_module() -> None:
    """No CLI module but `exits` numbers an exit status: a status that is only a name
    cannot drift between commands, and the board speaks of verdicts, not numbers."""
    package = Path(asyncbatch._cli.__file__).parent
    found = {
        path.name: _numbered_statuses(ast.parse(path.read_text()))
        for path in sorted(package.glob("*.py"))
        if path.name != "exits.py"
    }
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_summary_names_each_outcome_and_totals_the_items() -> None:
    """The summary has a line per batch saying how it ended, then the item totals."""
    board = _final_board(
        Event(EventKind.DONE, ID, _batch("completed", ready_items=9, failed_items=1))
    )
    board.observe(Event(EventKind.GONE, MISSING_ID), now=3.0)
    lines = board.summary_lines(125.0)
    assert lines[0] == "Summary: 2 batch(es) watched for 2m05s"
    assert "completed with 1 failed item(s)" in lines[1]
    assert lines[2].startswith(f"  {MISSING_ID}  gone")
    assert lines[3] == "0 of 2 batch(es) succeeded; items: 9 ready, 1 failed, 0 canceled"


def test_event_json_of_an_error_event() -> None:
    """An `error` event without a snapshot: batch null, error as `Type: message`."""
    value = json.loads(json_line(event_json(Event(EventKind.ERROR, ID, error=_auth_error()))))
    assert value["kind"] == "error"
    assert value["batch"] is None
    assert value["error"].startswith("AuthenticationError: GET u answered 401")


@pytest.mark.anyio
async def test_event_json_round_trips_real_watcher_events() -> None:
    """Each event of a real watch, as JSON, decodes back to the same kind, ID and snapshot."""
    async with simulator(item_failure_rate=0.3) as sim:
        ids = [sim.create_batch(n)["batch_id"] for n in (2, 5)]
        client = Client(api_key=KEY, base_url=sim.base_url)
        async with client, client.watch([*ids, MISSING_ID], min_interval=1.0) as watcher:
            events = [event async for event in watcher]
    assert len(events) > 4
    for event in events:
        value: dict[str, Any] = json.loads(json_line(event_json(event)))
        assert (value["kind"], value["batch_id"]) == (event.kind, event.batch_id)
        if event.batch is None:
            assert value["batch"] is None
        else:
            assert msgspec.convert(value["batch"], Batch) == event.batch
            assert value["batch"]["created_at"].endswith("Z")  # RFC 3339, UTC
        assert (value["error"] is None) == (event.error is None)


def test_secrets_are_found_in_argv_and_scrubbed() -> None:
    """--api-key values in either spelling are secrets; error lines show *** in their place."""
    assert argv_secrets(["status", "--api-key", "k1", "--api-key=k2", "--api-key"]) == ["k1", "k2"]
    out, err = io.StringIO(), io.StringIO()
    streams = Streams(out, err, io.StringIO(), ["k1"])
    streams.error("bad value k1\n  (twice: k1)")
    assert err.getvalue() == "asyncbatch: error: bad value *** (twice: ***)\n"
    assert out.getvalue() == ""
