"""``asyncbatch run``: a job (design §9) from a JSON Lines file to one results line per request.

Every outcome is written to ``--out`` (one JSON line, flushed) before it is acknowledged,
and a rerun first reads ``--out`` back: the outcomes it holds count as delivered, every
other final one is written again, so the file ends with exactly one line per request
whatever moment a run was killed at (a torn last line is cut off). ``--cancel`` cancels
the job in ``--state``: its batches, and its requests not yet in one; a rerun then
collects what the canceled batches finished.

The view shows the job as a whole (requests by state, slots in use, rate, ETA) above the
table of its active batches (the watch view's pieces); ``--plain`` writes a job line per
ended batch, ``--jsonl`` a ``{"kind": "job", ...}`` object.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .._client import Client
from .._errors import ConfigurationError
from .._events import Event
from .._jobs import Job, JobStatistics, OutcomeStatus, cancel_batches, open_ledger
from .._jobs.output import has_job, write_outcome, written_lines
from .._retry import PollPolicy
from .board import Board, Row
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .io import CommandError, Streams
from .logs import divert_logs
from .metrics import metrics_endpoint
from .render import duration_text, json_line, rate_text
from .view import LiveView, View, make_view

if TYPE_CHECKING:
    from rich.console import RenderableType


async def run_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Run (or resume, or with ``--cancel`` cancel) the job of ``--state``."""
    if args.cancel:
        return await _cancel(client, args.state, streams)
    out = Path(args.out)
    state = args.state or default_state(out)
    source = _readable(Path(args.file))
    written = await _written_lines(out, state)
    defaults = {"prompt": {"input_text": args.prompt}} if args.prompt else None
    board = Board()
    view = _job_view(streams, args)
    job = client.jobs.run(
        source,
        defaults=defaults,
        model_name=args.model or "pegasus1.5",
        analysis_mode=args.mode or "general",
        state=state,
        max_attempts=args.max_attempts,
        poll=PollPolicy(
            min_interval=min(args.interval, args.max_interval), max_interval=args.max_interval
        ),
        auto_ack=False,
        on_event=lambda event: _observed(event, board, view),
    )
    async with metrics_endpoint(args, streams, "run"), job:
        await job.reconcile(written)
        view.attach(job)
        started = anyio.current_time()
        view.start(board, started)
        try:
            with divert_logs(view.log if view.live else None), _append(out) as file:
                await _deliver(job, file, board, view)
        finally:
            view.finish(board, anyio.current_time() - started)
        stats = job.statistics()
    return EXIT_OK if stats.items.get(OutcomeStatus.READY, 0) == stats.total else EXIT_FAILED


def _readable(path: Path) -> Path:
    if not path.is_file():
        raise CommandError(f"run: cannot read {path}: no such file", EXIT_USAGE)
    return path


def _append(out: Path) -> TextIO:
    """``--out`` opened for appending (written line by line, flushed after each)."""
    try:
        return out.open("a", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"run: cannot write {out}: {exc.strerror or exc}", EXIT_USAGE) from None


def default_state(out: Path) -> str:
    """The state next to ``--out`` when none is given: ``OUT.state.db``."""
    return f"sqlite:///{out.resolve()}.state.db"


async def _deliver(job: Job, file: TextIO, board: Board, view: JobView) -> None:
    async with anyio.create_task_group() as ticker:
        ticker.start_soon(_tick, view, board)
        async for outcome in job:
            write_outcome(file, outcome)
            await job.ack(outcome)
        ticker.cancel_scope.cancel()


async def _tick(view: JobView, board: Board) -> None:
    while True:
        await anyio.sleep(1.0)
        view.refresh(board, anyio.current_time())


def _observed(event: Event, board: Board, view: JobView) -> None:
    now = anyio.current_time()
    row = board.observe(event, now)
    view.event(event, row, board, now)
    if event.is_final:
        board.rows.pop(event.batch_id, None)  # the table shows the active batches


async def _written_lines(out: Path, state: str) -> list[int]:
    """The ``line`` of every complete line of ``--out``; a torn last line is cut off."""
    try:
        lines = written_lines(out)
    except OSError as exc:
        raise CommandError(f"run: cannot read {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    except ConfigurationError as exc:
        raise CommandError(f"run: {exc}", EXIT_USAGE) from None
    if lines and not await has_job(state):
        raise CommandError(
            f"run: {out} already holds {len(lines)} line(s) but the state has no job: give "
            "the --state it was written with, or another --out",
            EXIT_USAGE,
        )
    return lines


async def _cancel(client: Client, state: str, streams: Streams) -> int:
    ledger = await open_ledger(state)
    try:
        if ledger.meta("input") != "complete":
            raise CommandError("run --cancel: the state holds no job", EXIT_USAGE)
        await ledger.set_meta({"canceled": "1"})
        waiting = await ledger.cancel_waiting()
        canceled = await cancel_batches(client, ledger.active_batches())
    finally:
        await ledger.aclose()
    streams.note(
        f"run: canceled {canceled} batch(es) and {waiting} request(s) not yet sent; rerun "
        "the job's command to collect what the batches finished"
    )
    return EXIT_OK


# -- the view --------------------------------------------------------------------------


def job_text(stats: JobStatistics) -> str:
    """One line on the whole job: requests by state, slots, rate and ETA."""
    items = stats.items
    return (
        f"job: {stats.finished}/{stats.total} final (ready {items.get('ready', 0)}, "
        f"failed {items.get('failed', 0)}, canceled {items.get('canceled', 0)}), "
        f"{items.get('running', 0)} running, {items.get('waiting', 0)} waiting; "
        f"slots {stats.slots_in_use}/{stats.slots_in_use + stats.slots_free}; "
        f"{rate_text(stats.rate)}; eta {duration_text(stats.eta)}"
    )


class JobView:
    """The chosen batch view, with the job's line: above the live table, after each ended
    batch in plain lines, as a ``{"kind": "job"}`` object in JSON Lines."""

    def __init__(self, inner: View, stream: TextIO, *, jsonl: bool) -> None:
        self._inner = inner
        self._stream = stream
        self._jsonl = jsonl
        self._job: Job | None = None
        self.live = inner.live

    def attach(self, job: Job) -> None:
        """Show this job's statistics."""
        self._job = job
        if isinstance(self._inner, JobLiveView):
            self._inner.job = job

    def start(self, board: Board, now: float) -> None:
        self._inner.start(board, now)
        if not self.live:
            self._job_line()

    def event(self, event: Event, row: Row, board: Board, now: float) -> None:
        self._inner.event(event, row, board, now)
        if event.is_final and not self.live:
            self._job_line()

    def refresh(self, board: Board, now: float) -> None:
        self._inner.refresh(board, now)

    def finish(self, board: Board, elapsed: float) -> None:
        if self.live:
            self._inner.finish(board, elapsed)
            return
        self._job_line()
        if not self._jsonl:
            self._write(f"finished in {duration_text(elapsed)}")

    def log(self, line: str) -> None:
        self._inner.log(line)

    def _job_line(self) -> None:
        if self._job is None:
            return
        stats = self._job.statistics()
        if self._jsonl:
            self._stream.write(json_line({"kind": "job", **_stats_json(stats)}))
            self._stream.flush()
        else:
            self._write(job_text(stats))

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


def _stats_json(stats: JobStatistics) -> dict[str, Any]:
    return {
        "total": stats.total,
        "items": stats.items,
        "batches_active": stats.batches_active,
        "batches_done": stats.batches_done,
        "attempts": stats.attempts,
        "rate": stats.rate,
        "eta": stats.eta,
    }


class JobLiveView(LiveView):
    """The watch live view with the job's line above the table of its active batches."""

    title = "asyncbatch run"
    job: Job | None = None

    def _frame(self, board: Board, now: float) -> RenderableType:
        from rich.console import Group  # noqa: PLC0415 - rich is an optional extra
        from rich.text import Text  # noqa: PLC0415

        frame = super()._frame(board, now)
        if self.job is None:
            return frame
        line = Text(job_text(self.job.statistics()), no_wrap=True, overflow="ellipsis")
        return Group(line, frame)

    def finish(self, board: Board, elapsed: float) -> None:
        """Leave the last frame on screen, then say how long the job ran."""
        if self._live is not None:
            self._live.update(self._frame(board, self._started_at + elapsed), refresh=True)
            self._live.stop()
            self._live = None
        self._console.print(f"finished in {duration_text(elapsed)}", highlight=False)


def _job_view(streams: Streams, args: argparse.Namespace) -> JobView:
    inner = make_view(streams.stdout, jsonl=args.jsonl, plain=args.plain, note=streams.note)
    if isinstance(inner, LiveView):
        inner = JobLiveView(streams.stdout)
    return JobView(inner, streams.stdout, jsonl=args.jsonl)
