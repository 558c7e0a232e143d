"""The three faces of ``asyncbatch watch``: a live rich table, plain lines, JSON Lines.

`make_view` picks one: ``--jsonl`` gives `JsonlView`; a terminal gives
`LiveView` when rich is installed (the optional ``asyncbatch[cli]`` extra);
anything else (a pipe, a file, ``--plain``, no rich) gives `PlainView`, one
line per event. Every view ends with `finish`; all but JSON Lines print the
summary there, since JSON Lines output is for programs and says it all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol, TextIO

from .._events import Event
from .._models import Batch
from .board import Board, Row
from .render import (
    counts_text,
    duration_text,
    event_json,
    json_line,
    rate_text,
    segment_cells,
    terminal_text,
    text_bar,
)

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod, RenderableType
    from rich.live import Live
    from rich.table import Table

Note = Callable[[str], None]
"""Writes one line for the person at the terminal (stderr), scrubbed of secrets."""

REFRESH_SECONDS = 0.25
"""How often a live view redraws between events, so rates and ETAs stay current."""

MIN_FRAME_SECONDS = 0.1
"""The shortest time between two redraws: a burst of events costs one frame, not one each."""


class View(Protocol):
    """Receives the board's changes and shows them."""

    live: bool
    """True when the view wants `refresh` calls between events."""

    def start(self, board: Board, now: float) -> None:
        """Called once, before the first event."""

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Called after ``board`` took in ``event``."""

    def refresh(self, board: Board, now: float) -> None:
        """Redraw without a new event (live views only)."""

    def retrying(self, board: Board, now: float) -> None:
        """Called when the watcher retried more failed requests (`Board.retry_text`)."""

    def finish(self, board: Board, elapsed: float) -> None:
        """Called once at the end: show the summary."""

    def log(self, line: str) -> None:
        """Show a log line; only a live view is given any (others leave them on stderr)."""


class JsonlView:
    """One JSON object per event, flushed line by line for pipes."""

    live = False

    def __init__(self, stream: TextIO, note: Note | None = None) -> None:
        self._stream = stream
        self._retries = _RetryNotes(note)

    def start(self, board: Board, now: float) -> None:
        """Nothing to show before the first event."""

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Write the event's JSON line and flush it."""
        self._stream.write(json_line(event_json(event)))
        self._stream.flush()

    def refresh(self, board: Board, now: float) -> None:
        """Nothing to redraw."""

    def retrying(self, board: Board, now: float) -> None:
        """Say on stderr what fails (stdout stays for events), now and then."""
        self._retries.note(board, now)

    def finish(self, board: Board, elapsed: float) -> None:
        """No summary: the exit status says how it went."""

    def log(self, line: str) -> None:
        """Never given any: log lines go to stderr, stdout stays JSON."""


class PlainView:
    """A line per event, then the summary: readable in logs and pipes."""

    live = False

    def __init__(self, stream: TextIO, note: Note | None = None) -> None:
        self._stream = stream
        self._retries = _RetryNotes(note)

    def start(self, board: Board, now: float) -> None:
        """Say what is being watched."""
        self._write(f"watching {len(board.rows)} batch(es)")

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Write one line describing the event."""
        self._write(plain_event_line(event, row))

    def refresh(self, board: Board, now: float) -> None:
        """Nothing to redraw."""

    def retrying(self, board: Board, now: float) -> None:
        """Say on stderr what fails (stdout stays for events), now and then."""
        self._retries.note(board, now)

    def finish(self, board: Board, elapsed: float) -> None:
        """Write the summary."""
        for line in board.summary_lines(elapsed):
            self._write(line)

    def log(self, line: str) -> None:
        """Never given any: log lines go to stderr, apart from the event lines."""

    def _write(self, line: str) -> None:
        self._stream.write(terminal_text(line) + "\n")
        self._stream.flush()


def plain_event_line(event: Event, row: Row) -> str:
    """``<id>  <kind>  <status>  [##x..]  12/30 done (...)  1.5/s  eta 12s``."""
    head = f"{event.batch_id}  {event.kind!s:<8}"
    if event.batch is None:
        return f"{head}  {row.outcome()}"
    batch = event.batch
    line = f"{head}  {batch.status!s:<10}  {text_bar(batch)}  {counts_text(batch)}"
    if event.is_final:
        return f"{line}  {row.outcome()}"
    return f"{line}  {rate_text(row.rate)}  eta {duration_text(row.eta)}"


class LiveView:
    """A table redrawn in place that fits the terminal's width: status, a bar of
    ready/failed/canceled items, counts, rate, ETA, a total row, and what is being retried."""

    live = True
    title = "asyncbatch watch"

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is an optional extra

        self._console: Console = Console(file=stream)  # honours NO_COLOR and COLUMNS
        self._live: Live | None = None
        self._started_at = 0.0
        self._drawn_at = -math.inf
        self._logged = 0

    def start(self, board: Board, now: float) -> None:
        """Open the live region."""
        from rich.live import Live  # noqa: PLC0415 - rich is an optional extra

        self._started_at = now
        self._live = Live(
            self._frame(board, now),
            console=self._console,
            auto_refresh=False,  # redrawn from the event loop; no thread reads the board
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Redraw with the new state, unless a frame was drawn a moment ago (the next tick will)."""
        if now - self._drawn_at >= MIN_FRAME_SECONDS:
            self.refresh(board, now)

    def refresh(self, board: Board, now: float) -> None:
        """Redraw: rates and ETAs move with time."""
        if self._live is not None:
            self._live.update(self._frame(board, now), refresh=True)
            self._drawn_at = now

    def retrying(self, board: Board, now: float) -> None:
        """Redraw: the line under the table says what fails."""
        self.refresh(board, now)

    def finish(self, board: Board, elapsed: float) -> None:
        """Leave the final table on screen and print the summary under it."""
        if self._live is not None:
            self._live.update(self._frame(board, self._started_at + elapsed), refresh=True)
            self._live.stop()
            self._live = None
        for line in board.summary_lines(elapsed):
            self._console.print(terminal_text(line), highlight=False, markup=False)

    def log(self, line: str) -> None:
        """Print a log line above the table (rich keeps the table below it) and count it."""
        self._logged += 1
        self._console.print(
            terminal_text(line, keep_newlines=True),
            highlight=False,
            markup=False,
            style="yellow",
            soft_wrap=True,
        )

    def _frame(self, board: Board, now: float) -> RenderableType:
        from rich.console import Group  # noqa: PLC0415 - rich is an optional extra
        from rich.text import Text  # noqa: PLC0415

        elapsed = duration_text(now - self._started_at)
        title = f"{self.title}: {len(board.rows)} batch(es), {elapsed}"
        if self._logged:
            title += f", {self._logged} log line(s) above"
        table, legend = live_table(board, self._console.width)
        lines: list[RenderableType] = [Text(title, no_wrap=True, overflow="ellipsis"), table]
        if board.retrying(now):
            text = terminal_text(board.retry_text())
            lines.append(Text(text, style="yellow", no_wrap=True, overflow="ellipsis"))
        elif legend:
            lines.append(Text(legend, style="grey50", no_wrap=True, overflow="ellipsis"))
        return Group(*lines)


BAR_WIDTH = 30
"""The progress bar's width when the terminal has room."""

MIN_BAR_WIDTH = 10
"""Narrower than this, the bar says too little: the view drops it instead."""

GLYPHS = {"ready": "█", "failed": "x", "canceled": "/", "left": "·"}
"""The bar's characters: distinct without colour (``NO_COLOR``) and in a copy of the screen."""

LEGEND = "  ".join(f"{glyph} {name}" for name, glyph in GLYPHS.items())

_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("batch", "left"),
    ("status", "left"),
    ("progress", "left"),
    ("done", "right"),
    ("ready", "right"),
    ("failed", "right"),
    ("canceled", "right"),
    ("rate", "right"),
    ("eta", "right"),
)

_DROPPED_FIRST = ("canceled", "ready", "progress", "rate")
"""Columns given up, in this order, once the bar is at its narrowest and still too wide.
The batch, its status, done/total, failed and the ETA always stay."""


def fit_columns(widths: Mapping[str, int], terminal: int) -> tuple[list[str], int]:
    """The columns that fit ``terminal`` cells, and the bar's width (0: no bar).

    ``widths`` is each column's widest cell, header included (the bar's is ignored).
    Columns are two cells apart. The bar shrinks first, then columns go (`_DROPPED_FIRST`).
    """
    shown = [name for name, _ in _COLUMNS]

    def spare(bar: int) -> int:
        cells = sum(bar if name == "progress" else widths[name] for name in shown)
        return terminal - cells - 2 * (len(shown) - 1) - 1  # the last cell stays off the edge

    for dropped in (None, *_DROPPED_FIRST):
        if dropped is not None:
            shown.remove(dropped)
        bar = BAR_WIDTH if "progress" in shown else 0
        if spare(bar) >= 0:
            return shown, bar
        if bar and spare(MIN_BAR_WIDTH) >= 0:
            return shown, bar + spare(bar)
    return shown, 0


_STATUS_STYLES = {
    "completed": "green",
    "canceled": "yellow",
    "canceling": "yellow",
    "expired": "red",
    "gone": "red",
    "error": "red",
    "processing": "cyan",
}

COMPLETED_WITH_FAILURES_STYLE = "dark_orange"
"""A ``completed`` batch with failed items is no success: it is not shown in green."""


def live_table(board: Board, terminal: int) -> tuple[Table, str]:
    """The table for ``terminal`` columns, with a total row; and the bar's legend, if any."""
    from rich.table import Table  # noqa: PLC0415 - rich is an optional extra

    rows = [_cells(row) for row in board.rows.values()]
    total = _total_cells(board)
    widths = {name: len(name) for name, _ in _COLUMNS}
    for cells in (*rows, total):
        for (name, _), cell in zip(_COLUMNS, cells, strict=True):
            widths[name] = max(widths[name], _width(cell))
    shown, bar = fit_columns(widths, terminal)
    table = Table(box=None, pad_edge=False, expand=False, header_style="bold underline")
    picked = [i for i, (name, _) in enumerate(_COLUMNS) if name in shown]
    for i in picked:
        name, justify = _COLUMNS[i]
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    for row, cells in zip(board.rows.values(), rows, strict=True):
        table.add_row(*(_bar(row.batch, bar) if i == 2 else cells[i] for i in picked))
    if len(board.rows) > 1:
        table.add_row(*(_bar(_TotalItems(board), bar) if i == 2 else total[i] for i in picked))
    return table, LEGEND if bar else ""


def _width(cell: RenderableType) -> int:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    return cell.cell_len if isinstance(cell, Text) else len(str(cell))


class _TotalItems:
    """Every batch's items as one, for the total row's bar."""

    def __init__(self, board: Board) -> None:
        totals = board.totals()
        self.total_items = totals.total
        self.ready_items = totals.ready
        self.failed_items = totals.failed
        self.canceled_items = totals.canceled
        self.finished_items = totals.finished


def _bar(batch: Batch | _TotalItems | None, width: int) -> RenderableType:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    bar = Text()
    if batch is None or width <= 0:
        return bar
    cells = segment_cells(batch, width)  # type: ignore[arg-type]  # duck-typed counters
    styles = ("green", "red", "yellow", "grey35")
    for count, (glyph, style) in zip(cells, zip(GLYPHS.values(), styles, strict=True), strict=True):
        bar.append(glyph * count, style=style)
    return bar


def _status(row: Row) -> RenderableType:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    text = row.status_text
    style = _STATUS_STYLES.get(text, "")
    if text == "completed" and row.batch is not None and row.batch.failed_items:
        style = COMPLETED_WITH_FAILURES_STYLE
    return Text(terminal_text(text), style=style)


def _cells(row: Row) -> tuple[RenderableType, ...]:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    batch = row.batch
    label = terminal_text(row.label)
    if batch is None:
        return (label, _status(row), "", "", "", "", "", "", "")
    return (
        label,
        _status(row),
        "",
        f"{batch.finished_items}/{batch.total_items}",
        str(batch.ready_items),
        Text(str(batch.failed_items), style="red" if batch.failed_items else ""),
        str(batch.canceled_items),
        rate_text(row.rate),
        duration_text(row.eta),
    )


def _total_cells(board: Board) -> tuple[RenderableType, ...]:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    totals = board.totals()
    return (
        Text("total", style="bold"),
        f"{totals.open} open" if totals.open else "all ended",
        "",
        f"{totals.finished}/{totals.total}",
        str(totals.ready),
        Text(str(totals.failed), style="red" if totals.failed else ""),
        str(totals.canceled),
        rate_text(totals.rate),
        duration_text(totals.eta),
    )


RETRY_NOTE_SECONDS = 10.0
"""Plain and JSON Lines views say what fails at most this often."""

RICH_HINT = (
    "a live table needs rich: pip install -e '.[cli]' (or 'asyncbatch[cli]'); showing plain lines"
)


class _RetryNotes:
    """Turns a growing retry count into an occasional line on stderr."""

    def __init__(self, note: Note | None) -> None:
        self._note = note
        self._noted_at = -math.inf

    def note(self, board: Board, now: float) -> None:
        if self._note is not None and now - self._noted_at >= RETRY_NOTE_SECONDS:
            self._noted_at = now
            self._note(f"watch: {board.retry_text()}")


def make_view(
    stream: TextIO, *, jsonl: bool = False, plain: bool = False, note: Note | None = None
) -> View:
    """The view for this output: JSON Lines, a live table on a terminal, else plain lines.

    ``note`` writes lines for the person at the terminal (stderr): what is being retried,
    and, on a terminal without rich, how to get the live table.
    """
    if jsonl:
        return JsonlView(stream, note)
    if plain or not _is_terminal(stream):
        return PlainView(stream, note)
    try:
        return LiveView(stream)
    except ImportError:  # rich is the optional `asyncbatch[cli]` extra
        if note is not None:
            note(RICH_HINT)
        return PlainView(stream, note)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
