"""``asyncbatch results``: a batch's results as JSON Lines, with nothing dropped silently.

Each item is written as one JSON line as it arrives. A line the API sends
malformed raises `DecodeError` from the `ResultStream`, which stays open: the
line is reported on stderr with its number and the start of its text, the
stream goes on, and the exit status ends up 1.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from .._client import Client
from .._errors import DecodeError
from .._models import Batch
from .exits import EXIT_FAILED, EXIT_OK
from .io import CommandError, Streams
from .render import result_line

PROGRESS_MIN_ITEMS = 100
"""Results of at least this many items show a running count on a terminal's stderr."""


async def results_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Stream results as JSON Lines; malformed lines are reported, counted, and fail the exit."""
    batch = await client.batches.retrieve(args.batch_id)  # a clear 404 before any output
    if not batch.is_terminal and not args.partial:
        raise CommandError(
            f"results: batch {batch.batch_id} is still {batch.status} "
            f"({batch.finished_items}/{batch.total_items} items done): wait for it with "
            f"'asyncbatch watch {batch.batch_id}', or pass --partial for what is there now",
            EXIT_FAILED,
        )
    if args.output is None:
        counts = await _copy_results(client, batch, streams.stdout, streams)
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as file:  # noqa: ASYNC230 - local file, small writes
                counts = await _copy_results(client, batch, file, streams)
        except OSError as exc:
            raise CommandError(
                f"cannot write {args.output}: {exc.strerror or exc}", EXIT_FAILED
            ) from None
    written, malformed = counts
    where = "standard output" if args.output is None else args.output
    streams.note(f"{written} result(s) of batch {batch.batch_id} written to {where}")
    if malformed:
        streams.error(f"{malformed} malformed results line(s) were not written (see above)")
        return EXIT_FAILED
    return EXIT_OK


async def _copy_results(
    client: Client, batch: Batch, out: TextIO, streams: Streams
) -> tuple[int, int]:
    progress = _Progress(streams.stderr, batch.total_items)
    written = malformed = 0
    async with client.batches.results(batch.batch_id) as items:
        while True:
            try:
                item = await anext(items)
            except StopAsyncIteration:
                break
            except DecodeError as exc:
                if exc.line_number is None:
                    raise
                malformed += 1
                snippet = exc.snippet.decode("utf-8", "replace")[:120]
                progress.clear()
                streams.warn(f"results line {exc.line_number} is malformed: {snippet!r}")
                continue
            out.write(result_line(item))
            written += 1
            progress.show(written + malformed)
    out.flush()
    progress.clear()
    return written, malformed


class _Progress:
    """A running ``results: 120/1000 lines`` on a terminal's stderr, for large batches only."""

    def __init__(self, stream: TextIO, total: int) -> None:
        isatty = getattr(stream, "isatty", None)
        self._on = bool(isatty and isatty()) and total >= PROGRESS_MIN_ITEMS
        self._stream = stream
        self._total = total
        self._step = max(1, total // 100)

    def show(self, lines: int) -> None:
        if self._on and (lines % self._step == 0 or lines == self._total):
            self._stream.write(f"\rresults: {lines}/{self._total} lines")
            self._stream.flush()

    def clear(self) -> None:
        if self._on:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
