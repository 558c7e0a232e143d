"""The three faces of ``asyncbatch watch``: a live rich table, plain lines, JSON Lines.

`make_view` picks one: ``--jsonl`` gives `JsonlView`; a terminal gives
`LiveView` when rich is installed (the optional ``asyncbatch[cli]`` extra);
anything else (a pipe, a file, ``--plain``, no rich) gives `PlainView`, one
line per event. Every view ends with `finish`; all but JSON Lines print the
summary there, since JSON Lines output is for programs and says it all.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, TextIO

from .._events import Event
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

    def finish(self, board: Board, elapsed: float) -> None:
        """Called once at the end: show the summary."""

    def log(self, line: str) -> None:
        """Show a log line; only a live view is given any (others leave them on stderr)."""


class JsonlView:
    """One JSON object per event, flushed line by line for pipes."""

    live = False

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def start(self, board: Board, now: float) -> None:
        """Nothing to show before the first event."""

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Write the event's JSON line and flush it."""
        self._stream.write(json_line(event_json(event)))
        self._stream.flush()

    def refresh(self, board: Board, now: float) -> None:
        """Nothing to redraw."""

    def finish(self, board: Board, elapsed: float) -> None:
        """No summary: the exit status says how it went."""

    def log(self, line: str) -> None:
        """Never given any: log lines go to stderr, stdout stays JSON."""


class PlainView:
    """A line per event, then the summary: readable in logs and pipes."""

    live = False

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def start(self, board: Board, now: float) -> None:
        """Say what is being watched."""
        self._write(f"watching {len(board.rows)} batch(es)")

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        """Write one line describing the event."""
        self._write(plain_event_line(event, row))

    def refresh(self, board: Board, now: float) -> None:
        """Nothing to redraw."""

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
    """A table redrawn in place: status, a bar of ready/failed/canceled items, rate, ETA."""

    live = True

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is an optional extra

        self._console: Console = Console(file=stream)
        self._live: Live | None = None
        self._started_at = 0.0
        self._drawn_at = -math.inf
        self._logged = 0

    def start(self, board: Board, now: float) -> None:
        """Open the live region."""
        from rich.live import Live  # noqa: PLC0415 - rich is an optional extra

        self._started_at = now
        self._live = Live(
            self._table(board, now),
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
            self._live.update(self._table(board, now), refresh=True)
            self._drawn_at = now

    def finish(self, board: Board, elapsed: float) -> None:
        """Leave the final table on screen and print the summary under it."""
        if self._live is not None:
            self._live.update(self._table(board, self._started_at + elapsed), refresh=True)
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

    def _table(self, board: Board, now: float) -> Table:
        from rich.table import Table  # noqa: PLC0415 - rich is an optional extra

        elapsed = duration_text(now - self._started_at)
        title = f"asyncbatch watch: {len(board.rows)} batch(es), {elapsed}"
        if self._logged:
            title += f", {self._logged} log line(s) above"
        table = Table(title=title, title_justify="left", expand=False)
        for name, justify in _COLUMNS:
            table.add_column(name, justify=justify, no_wrap=True)
        for row in board.rows.values():
            table.add_row(*_cells(row))
        return table


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

_STATUS_STYLES = {
    "completed": "green",
    "canceled": "yellow",
    "canceling": "yellow",
    "expired": "red",
    "gone": "red",
    "error": "red",
    "processing": "cyan",
}


def _cells(row: Row) -> tuple[RenderableType, ...]:
    from rich.text import Text  # noqa: PLC0415 - rich is an optional extra

    status = Text(terminal_text(row.status_text), style=_STATUS_STYLES.get(row.status_text, ""))
    batch = row.batch
    if batch is None:
        return (terminal_text(row.batch_id), status, "", "", "", "", "", "", "")
    ready, failed, canceled, left = segment_cells(batch, 30)
    bar = Text()
    for cells, style in ((ready, "green"), (failed, "red"), (canceled, "yellow"), (left, "grey35")):
        bar.append("━" * cells, style=style)
    return (
        terminal_text(row.batch_id),
        status,
        bar,
        f"{batch.finished_items}/{batch.total_items}",
        str(batch.ready_items),
        Text(str(batch.failed_items), style="red" if batch.failed_items else ""),
        str(batch.canceled_items),
        rate_text(row.rate),
        duration_text(row.eta),
    )


def make_view(stream: TextIO, *, jsonl: bool = False, plain: bool = False) -> View:
    """The view for this output: JSON Lines, a live table on a terminal, else plain lines."""
    if jsonl:
        return JsonlView(stream)
    if plain or not _is_terminal(stream):
        return PlainView(stream)
    try:
        return LiveView(stream)
    except ImportError:  # rich is the optional `asyncbatch[cli]` extra
        return PlainView(stream)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
