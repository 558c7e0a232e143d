"""``asyncbatch watch``: follow batches through a `Watcher` and show them in a view.

`follow` is shared by ``watch``, ``create --watch`` and ``demo``: it feeds
each event into a `Board` and the chosen view, redraws a live view a few
times a second in between, calls an optional hook per event (the demo cancels
a batch from it), and shows the summary at the end, also when interrupted.
With ``--webhook-port``, ``watch`` runs a webhook endpoint around it and
attaches the watcher to it (`_cli_webhooks`).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import Any, cast

import anyio

from ._cli_board import Board, Row
from ._cli_io import CommandError, Streams
from ._cli_view import REFRESH_SECONDS, View, make_view
from ._cli_webhooks import WEBHOOK_INTERVAL, WEBHOOK_MAX_INTERVAL, webhook_endpoint
from ._client import Client
from ._events import Event
from ._models import ACTIVE_STATUSES, Batch
from ._watcher import Watcher

EventHook = Callable[[Event, Row], Awaitable[None]]


def watch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Watcher` options the command line exposes, from parsed arguments.

    With webhooks on, the intervals not given default to the safety net's.
    """
    webhooks = getattr(args, "webhook_port", None) is not None
    interval = args.interval or (WEBHOOK_INTERVAL if webhooks else 5.0)
    max_interval = args.max_interval or (WEBHOOK_MAX_INTERVAL if webhooks else 60.0)
    return {
        "min_interval": min(interval, max_interval),
        "max_interval": max_interval,
        "deadline": args.deadline,
        "max_concurrency": args.concurrency,
        "max_failures": args.max_failures,
    }


async def watch_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Follow the IDs given (and with ``--all-active`` the account's active batches)."""
    batch_ids = list(dict.fromkeys(args.batch_ids))
    if args.all_active:
        pages = cast(AsyncGenerator[Batch, None], client.batches.list(status=ACTIVE_STATUSES))
        async with aclosing(pages) as batches:
            batch_ids += [b.batch_id async for b in batches if b.batch_id not in batch_ids]
        if not batch_ids:
            streams.note("no active batches to watch")
            return 0
    if not batch_ids:
        raise CommandError("watch: give at least one batch ID, or --all-active", 2)
    async with AsyncExitStack() as stack:
        on_watcher = None
        if args.webhook_port is not None:  # _cli.run resolved the secret already
            server = await stack.enter_async_context(
                webhook_endpoint(args, streams, args.webhook_clock)
            )
            on_watcher = server.receiver.attach
        view = make_view(streams.stdout, jsonl=args.jsonl, plain=args.plain)
        board = await follow(client, batch_ids, view, watch_options(args), on_watcher=on_watcher)
    return report_exit(board, streams)


def report_exit(board: Board, streams: Streams) -> int:
    """The exit status for a finished watch; a refused key also gets its error line."""
    status = board.exit_status()
    if any(row.auth_failed for row in board.rows.values()):
        streams.error("the API key was refused: check --api-key or $TWELVELABS_API_KEY")
    return status


async def follow(
    client: Client,
    batch_ids: Sequence[str],
    view: View,
    options: dict[str, Any],
    *,
    on_event: EventHook | None = None,
    on_watcher: Callable[[Watcher], object] | None = None,
) -> Board:
    """Watch ``batch_ids`` to the end through ``view``; returns the final board.

    ``on_watcher`` is given the watcher before it starts (a webhook receiver attaches it).
    """
    board = Board()
    for batch_id in batch_ids:
        board.add(batch_id)
    started = anyio.current_time()
    view.start(board, started)
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as ticker:
            if view.live:
                ticker.start_soon(_redraw, view, board)
            try:
                watcher = client.watch(batch_ids, **options)
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
            view.event(event, row, board, now)
            if on_event is not None:
                await on_event(event, row)


async def _redraw(view: View, board: Board) -> None:
    while True:
        await anyio.sleep(REFRESH_SECONDS)
        view.refresh(board, anyio.current_time())
