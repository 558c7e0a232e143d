"""``asyncbatch watch``: follow batches through a `Watcher` and show them in a view.

`follow` is shared by ``watch``, ``create --watch`` and ``demo``: it feeds
each event into a `Board` and the chosen view, redraws a live view a few
times a second in between, calls an optional hook per event (the demo cancels
a batch from it), and shows the summary at the end, also when interrupted.
With ``--metrics-port``, ``watch`` serves Prometheus metrics meanwhile (`metrics`).
With ``--webhook-port``, ``watch`` runs a webhook endpoint around it and
attaches the watcher to it (`webhooks`); with ``--state`` it watches with
a durable store, and with ``--replica`` as one of a fleet (`state`).

Every event is acknowledged only after the view wrote it (JSON Lines and plain
lines are flushed by then), so with a store a crash or a closed pipe loses
nothing: the next watch reports again what was not shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import Any, assert_never

import anyio

from .._client import Client
from .._events import Event, EventKind
from .._models import ACTIVE_STATUSES
from .._watcher import Watcher
from .board import Board, Row, Verdict
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .io import CommandError, Streams
from .logs import divert_logs
from .metrics import metrics_endpoint
from .render import failure_text
from .store import WatchStore, watch_store
from .view import REFRESH_SECONDS, View, make_view
from .webhooks import WEBHOOK_INTERVAL, WEBHOOK_MAX_INTERVAL, webhook_endpoint

EventHook = Callable[[Event, Row], Awaitable[None]]


def watch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Watcher` options the command line exposes, from parsed arguments.

    With webhooks on, the intervals not given default to the safety net's.
    ``--rate`` is this watcher's own budget unless ``--replica`` gives it to
    the fleet's gate (`state`).
    """
    webhooks = getattr(args, "webhook_port", None) is not None
    interval = args.interval or (WEBHOOK_INTERVAL if webhooks else 5.0)
    max_interval = args.max_interval or (WEBHOOK_MAX_INTERVAL if webhooks else 60.0)
    options: dict[str, Any] = {
        "min_interval": min(interval, max_interval),
        "max_interval": max_interval,
        "timeout": args.deadline,
        "max_concurrency": args.concurrency,
        "max_failures": args.max_failures,
    }
    if getattr(args, "rate", None) is not None and not getattr(args, "replica", False):
        options.update(requests_per_second=args.rate, burst=args.burst)
    return options


async def watch_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Follow the IDs given (and with ``--all-active`` the account's active batches).

    With ``--state``, also every batch the store holds that has not ended.
    """
    batch_ids = list(dict.fromkeys(args.batch_ids))
    if args.all_active:
        pages = client.batches.list(status=ACTIVE_STATUSES)
        async with aclosing(pages) as batches:
            batch_ids += [b.batch_id async for b in batches if b.batch_id not in batch_ids]
        if not batch_ids and args.state is None:
            streams.note("no active batches to watch")
            return EXIT_OK
    if not batch_ids and args.state is None:
        raise CommandError("watch: give at least one batch ID, --all-active or --state", EXIT_USAGE)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(metrics_endpoint(args, streams, "watch"))
        state = await stack.enter_async_context(watch_store(args))
        board = _initial_board(batch_ids, state, streams)
        if board is None:
            return EXIT_OK
        options = watch_options(args) | (state.options if state else {})
        on_watcher = None
        if args.webhook_port is not None:  # _cli.run resolved the secret already
            server = await stack.enter_async_context(
                webhook_endpoint(args, streams, args.webhook_clock)
            )
            on_watcher = server.receiver.attach
        view = make_view(streams.stdout, jsonl=args.jsonl, plain=args.plain, note=streams.note)
        board = await follow(client, batch_ids, view, options, board=board, on_watcher=on_watcher)
    return report_exit(board, streams)


def _initial_board(
    batch_ids: list[str], state: WatchStore | None, streams: Streams
) -> Board | None:
    """The rows to show from the start; None when a ``--state`` watch has nothing to do.

    A replica starts empty: a row appears with its first event for a batch it holds. Otherwise
    the board shows the IDs given, then the store's unfinished batches; an ID
    given whose end was already acknowledged is shown as such, and gets no event.
    """
    board = Board(replica=state is not None and state.owner is not None)
    if state is not None and state.owner is not None:
        streams.note(f"watch: replica {state.owner} on {state.shown}")
        return board
    for batch_id in batch_ids:
        board.add(batch_id)
    if state is None:
        return board
    ended = state.ended()
    for batch_id in batch_ids:
        if batch_id in ended:
            board.restore(ended[batch_id])
    resumed = [b for b in state.unfinished() if b not in board.rows]
    for batch_id in resumed:
        board.add(batch_id)
    if resumed:
        streams.note(f"watch: resuming {len(resumed)} unfinished batch(es) from {state.shown}")
    if not board.rows:
        streams.note(f"watch: nothing to watch: no unfinished batches in {state.shown}")
        return None
    return board


def report_exit(board: Board, streams: Streams) -> int:
    """The exit status for a finished watch; a refused key also gets its error line."""
    match verdict := board.verdict():
        case Verdict.SUCCEEDED:
            return EXIT_OK
        case Verdict.FAILED:
            return EXIT_FAILED
        case Verdict.KEY_REFUSED:  # like a wrong --api-key: fix the invocation, then retry
            streams.error("the API key was refused: check --api-key or $TWELVELABS_API_KEY")
            return EXIT_USAGE
        case _:
            assert_never(verdict)


async def follow(
    client: Client,
    batch_ids: Sequence[str],
    view: View,
    options: dict[str, Any],
    *,
    board: Board | None = None,
    on_event: EventHook | None = None,
    on_watcher: Callable[[Watcher], object] | None = None,
) -> Board:
    """Watch ``batch_ids`` to the end through ``view``; returns the final board.

    ``board`` (default: one row per ID) is what the view shows at first;
    batches the watcher reports beyond it (resumed from a state store, taken
    over from a replica) get rows as their first event arrives.
    ``on_watcher`` is given the watcher before it starts (a webhook receiver
    attaches it). While a live view is on screen, log lines go to it.
    """
    if board is None:
        board = Board()
        for batch_id in batch_ids:
            board.add(batch_id)
    started = anyio.current_time()
    view.start(board, started)
    failure: BaseException | None = None
    try:
        with divert_logs(view.log if view.live else None):
            async with anyio.create_task_group() as ticker:
                try:
                    watcher = client.watch(batch_ids, **options, auto_ack=False)
                    ticker.start_soon(_tick, view, board, watcher)
                    if on_watcher is not None:
                        on_watcher(watcher)
                    await _consume(watcher, view, board, on_event)
                except Exception as exc:  # re-raised below, outside the group, unwrapped
                    failure = exc
                ticker.cancel_scope.cancel()
    finally:
        view.finish(board, anyio.current_time() - started)
    if failure is not None:
        raise failure
    return board


async def _consume(watcher: Watcher, view: View, board: Board, on_event: EventHook | None) -> None:
    async with watcher:
        async for event in watcher:
            now = anyio.current_time()
            row = board.observe(event, now)
            view.event(event, row, board, now)  # written and flushed when it returns
            if on_event is not None:
                await on_event(event, row)
            if event.kind is not EventKind.ERROR:
                # Only now, once shown, does it count as delivered (a no-op without a
                # store). An `error` is this watch giving up, not the batch ending:
                # left unacknowledged, the next watch on the store resumes the batch.
                await watcher.ack(event)


async def _tick(view: View, board: Board, watcher: Watcher) -> None:
    """Between events: tell the view of new retries, and redraw a live one."""
    interval = REFRESH_SECONDS if view.live else RETRY_CHECK_SECONDS
    while True:
        await anyio.sleep(interval)
        now = anyio.current_time()
        stats = watcher.statistics()
        failure = None if stats.last_failure is None else failure_text(stats.last_failure)
        if board.note_retries(stats.retries + stats.rate_limited, failure, now):
            view.retrying(board, now)
        elif view.live:
            view.refresh(board, now)


RETRY_CHECK_SECONDS = 1.0
"""How often a view without redraws checks the watcher for retried failures."""
