"""The one-request commands: ``status``, ``list``, ``cancel``, ``delete`` and ``create``.

Each takes an open `Client`, the parsed arguments and the `Streams`, writes
its output, and returns the exit status. API errors propagate to `_cli.run`,
which turns them into one line on stderr; only a failure the command recovers
from (a missing batch among several) is handled here.
"""

from __future__ import annotations

import argparse
from contextlib import aclosing
from typing import Any

from .._client import Client
from .._errors import NotFoundError
from .create import load_create_body
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .io import CommandError, Streams
from .render import NO_SUCH_BATCH, batch_json, batch_line, json_text, struct_json, terminal_text
from .view import make_view
from .watch import follow, report_exit, watch_options


async def status_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Print each batch; a missing one is reported and the others still shown."""
    exit_status = EXIT_OK
    for batch_id in args.batch_ids:
        try:
            batch = await client.batches.retrieve(batch_id)
        except NotFoundError:
            streams.error(f"{batch_id}: {NO_SUCH_BATCH}")
            exit_status = EXIT_FAILED
            continue
        streams.out(json_text(batch_json(batch)) if args.json else batch_line(batch))
    return exit_status


async def list_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Print the account's batches, newest first, as filtered."""
    pages = client.batches.list(status=args.status, analysis_mode=args.mode)
    shown = 0
    async with aclosing(pages) as batches:
        async for batch in batches:
            streams.out(json_text(batch_json(batch)) if args.json else batch_line(batch))
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    if not shown and not args.json:
        streams.note("no batches")
    return EXIT_OK


async def cancel_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Ask to cancel; print the batch as the API answered."""
    batch = await client.batches.cancel(args.batch_id)
    if args.json:
        streams.out(json_text(batch_json(batch)))
    else:
        streams.out(terminal_text(f"{batch.batch_id}: cancel requested, status now {batch.status}"))
    return EXIT_OK


async def delete_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Delete a finished batch."""
    await client.batches.delete(args.batch_id)
    if args.json:
        streams.out(json_text({"batch_id": args.batch_id, "deleted": True}))
    else:
        streams.out(f"{args.batch_id}: deleted")
    return EXIT_OK


async def create_command(client: Client, args: argparse.Namespace, streams: Streams) -> int:
    """Create a batch from a file of requests; print its ID, then follow it with ``--watch``."""
    body = load_create_body(args.file, streams.stdin if args.file == "-" else None)
    arguments = _create_arguments(body, args)
    _check_prompts(arguments, args.file)
    created = await client.batches.create(**arguments)
    if args.json:
        streams.out(json_text(struct_json(created)))
    else:
        streams.out(terminal_text(created.batch_id))
    if not args.watch:
        return EXIT_OK
    view = make_view(streams.stdout, jsonl=args.jsonl, plain=args.plain, note=streams.note)
    board = await follow(client, [created.batch_id], view, watch_options(args))
    return report_exit(board, streams)


def _check_prompts(arguments: dict[str, Any], name: str) -> None:
    """General mode needs a prompt per request, its own or the default: say so before sending."""
    if arguments["analysis_mode"] != "general" or "prompt" in arguments.get("defaults", {}):
        return
    for number, request in enumerate(arguments["requests"], start=1):
        if "prompt" not in request:
            which = f"request {number}" + (
                f" ({request['custom_id']})" if request.get("custom_id") else ""
            )
            raise CommandError(
                f'create: {which} of {name} has no prompt: pass --prompt "...", or give the '
                'requests (or the file\'s "defaults") a "prompt"',
                EXIT_USAGE,
            )


def _create_arguments(body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The file's create body with the command line's choices on top."""
    defaults = dict(body.get("defaults") or {})
    if args.prompt is not None:
        defaults["prompt"] = {"input_text": args.prompt}
    arguments: dict[str, Any] = {
        "requests": body["requests"],
        "model_name": args.model or body.get("model_name") or "pegasus1.5",
        "analysis_mode": args.mode or body.get("analysis_mode") or "general",
    }
    if defaults:
        arguments["defaults"] = defaults
    return arguments
