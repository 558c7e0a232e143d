"""Where the command line sends the ``asyncbatch`` loggers' warnings and errors.

The library logs a few things at WARNING and above, such as a webhook
delivery the receiver refused. Python's fallback handler would write them to
stderr in the middle of a live table and break the display, or lose them if
the process has a handler of its own that drops them. So for the length of
one command, `relay_logs` hands every such record of the ``asyncbatch``
loggers to one handler, which writes it as a scrubbed ``asyncbatch: warning:``
line on stderr, or, while `divert_logs` is in force (a live view is on
screen), to the view, which shows it above its table. Nothing is dropped.

Only records emitted by the command's own tasks are taken (a context
variable marks them), so two commands run in one process, as tests do, do not
see each other's logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .io import PROG, Streams
from .render import terminal_text

LOGGER_NAME = "asyncbatch"

LogSink = Callable[[str], None]
"""Takes one formatted log line (several lines for a traceback)."""

_active: ContextVar[LogRelay | None] = ContextVar("asyncbatch_cli_log_relay", default=None)


class LogRelay(logging.Handler):
    """Writes WARNING-and-above records of this command as lines on stderr or to a view."""

    def __init__(self, streams: Streams) -> None:
        super().__init__(logging.WARNING)
        self._streams = streams
        self.divert: LogSink | None = None
        self.count = 0
        """Records relayed so far."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Only records from this command's tasks."""
        return _active.get() is self and super().filter(record)

    def format(self, record: logging.LogRecord) -> str:
        """``asyncbatch: warning: <message>``, then the traceback, if any; secrets scrubbed,
        control characters escaped."""
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        return terminal_text(self._streams.scrub(text), keep_newlines=True)

    def emit(self, record: logging.LogRecord) -> None:
        """Hand the line to the live view when one is on screen, else to stderr."""
        try:
            line = self.format(record)
            self.count += 1
            if self.divert is not None:
                self.divert(line)
            else:
                self._streams.stderr.write(line + "\n")
                self._streams.stderr.flush()
        except Exception:  # a logging call must never break the command
            self.handleError(record)


@contextmanager
def relay_logs(streams: Streams) -> Iterator[LogRelay]:
    """Relay the ``asyncbatch`` loggers' records of this command until the block ends."""
    relay = LogRelay(streams)
    logger = logging.getLogger(LOGGER_NAME)
    token = _active.set(relay)
    logger.addHandler(relay)
    try:
        yield relay
    finally:
        logger.removeHandler(relay)
        _active.reset(token)


@contextmanager
def divert_logs(sink: LogSink | None) -> Iterator[None]:
    """Within the block, send this command's log lines to ``sink`` (None: leave them on stderr)."""
    relay = _active.get()
    if relay is None or sink is None:
        yield
        return
    before, relay.divert = relay.divert, sink
    try:
        yield
    finally:
        relay.divert = before
