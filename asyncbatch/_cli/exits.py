"""The exit statuses of the ``asyncbatch`` command: the numbers a shell script sees.

Every command returns one of these, and nothing else names a number; which one a
finished watch gets follows from the board's `Verdict` (`watch.report_exit`).
"""

from __future__ import annotations

EXIT_OK = 0
"""Everything asked for happened (every watched batch completed with all items ready)."""
EXIT_FAILED = 1
"""The command ran, and something it reports on failed (a batch, an item, a request)."""
EXIT_USAGE = 2
"""The command line, an input file or the API key is wrong: fix it before trying again."""
EXIT_INTERRUPTED = 130
"""Ctrl-C, as a shell reports a process that SIGINT ended (128 + 2)."""
EXIT_CLOSED_PIPE = EXIT_OK
"""The reader of standard output went away: every command stops quietly with this."""
