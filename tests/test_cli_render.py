"""The command line's pure parts: JSON of events, bars, durations, the board's rates, ETAs,
exit statuses and summary, and the scrubbing of secrets."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbatch import AuthenticationError, Batch, Client, Event, EventKind, NotFoundError
from asyncbatch._cli.board import Board
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


def test_exit_status_rules() -> None:
    """0 only when every batch completed with all items ready; 2 for a refused key; else 1."""
    good = Event(EventKind.DONE, ID, _batch("completed", ready_items=10))
    failed = Event(EventKind.DONE, ID, _batch("completed", ready_items=9, failed_items=1))
    canceled = Event(EventKind.DONE, ID, _batch("canceled", ready_items=2, canceled_items=8))
    error = NotFoundError(status=404, code=None, message=None, headers={}, method="GET", url="u")
    gone = Event(EventKind.GONE, ID, error=error)
    auth = Event(EventKind.ERROR, ID, error=_auth_error())
    assert _final_board(good).exit_status() == 0
    assert _final_board().exit_status() == 0
    assert [_final_board(e).exit_status() for e in (failed, canceled, gone)] == [1, 1, 1]
    assert _final_board(auth).exit_status() == 2
    assert _final_board(Event(EventKind.SEEN, ID, _batch())).exit_status() == 1  # never ended


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
