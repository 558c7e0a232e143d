"""The ``asyncbatch`` command: `main` for the console script, `run` for everything else.

`run` is async and takes its argument list, streams and environment, so tests
await it on their own (virtual-time) loop; `main` wraps it in `anyio.run` and
exits with its status. Expected failures (usage, a refused key, a missing
batch, a conflict, an unreachable API) become one ``asyncbatch: error: ...``
line on stderr and an exit status (see the ``--help`` epilog); only bugs give
tracebacks. The API key and webhook secrets are never written anywhere:
every line on stderr is scrubbed of them, whatever its source. The
``asyncbatch`` loggers' warnings become such lines too, or, under a live
view, lines above its table (`logs`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TextIO

import anyio

from .._client import API_KEY_ENV_VARS, BASE_URL_ENV_VAR, DEFAULT_BASE_URL, Client
from .._errors import (
    AsyncBatchError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InvalidBatchIdError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from .._models import check_batch_id
from .args import HelpShown, UsageError, parse
from .exits import EXIT_CLOSED_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .io import CommandError, Streams, argv_secrets
from .logs import relay_logs
from .render import failure_text
from .webhooks import SECRET_ENV_VAR, webhook_secret, webhook_verify_command

Command = Callable[[Client, argparse.Namespace, Streams], Awaitable[int]]


async def run(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    *,
    stdin: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    webhook_clock: Callable[[], float] | None = None,
) -> int:
    """Run one ``asyncbatch`` command line and return its exit status.

    ``argv`` excludes the program name (default ``sys.argv[1:]``); the
    streams default to the process's; ``env`` replaces ``os.environ`` for
    ``$TWELVELABS_API_KEY``, ``$TWELVELABS_BASE_URL`` and
    ``$TWELVELABS_WEBHOOK_SECRET``. ``webhook_clock`` (Unix seconds) is what
    ``watch --webhook-port`` checks delivery timestamps against (default:
    the system clock), so that tests can date deliveries on a simulator's timeline.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    env = os.environ if env is None else env
    streams = Streams(
        stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin, argv_secrets(argv)
    )
    secret_vars = (*API_KEY_ENV_VARS, SECRET_ENV_VAR)
    streams.secrets += [env[name] for name in secret_vars if env.get(name)]
    try:
        args = parse(argv, streams.stdout, streams.stderr)
    except HelpShown:
        return EXIT_OK
    except UsageError as exc:
        streams.error(str(exc))
        return EXIT_USAGE
    args.webhook_clock = webhook_clock
    try:
        with relay_logs(streams):
            return await _dispatch(args, streams, env)
    except (CommandError, AsyncBatchError, ValueError) as exc:
        message, status = _describe(exc, args)
        streams.error(message)
        return status


def main() -> None:
    """The console script: run the command line and exit with its status."""
    try:
        status = anyio.run(run)
    except KeyboardInterrupt:
        sys.stderr.write("\nasyncbatch: interrupted\n")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`asyncbatch list | head -1`): it had what it wanted, so stop
        # quietly with 0 whatever the command, since a short output that fit in the pipe
        # never notices the reader left. Point stdout at /dev/null so that the
        # interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_CLOSED_PIPE
    sys.exit(status)


async def _dispatch(args: argparse.Namespace, streams: Streams, env: Mapping[str, str]) -> int:
    if args.command == "demo":
        from .demo import demo_command  # noqa: PLC0415 - the demo wiring loads only here

        return await demo_command(args, streams)
    if args.command == "webhook-verify":  # offline: no API key, no client
        return await webhook_verify_command(args, streams, env)
    api_key = args.api_key or _first(env, API_KEY_ENV_VARS)
    if not api_key:
        raise CommandError("no API key: pass --api-key KEY or set $TWELVELABS_API_KEY", EXIT_USAGE)
    if args.command == "simulate":
        from .demo import simulate_command  # noqa: PLC0415 - the demo wiring loads only here

        if args.webhook_urls:
            args.webhook_secret = webhook_secret(args.webhook_secret, env, "simulate")
            streams.secrets.append(args.webhook_secret)
        return await simulate_command(args, streams, api_key)
    if args.command == "watch" and args.webhook_port is None and args.webhook_secret:
        raise CommandError("watch: --webhook-secret needs --webhook-port", EXIT_USAGE)
    if getattr(args, "webhook_port", None) is not None:  # watch with webhooks
        args.webhook_secret = webhook_secret(args.webhook_secret, env, "watch")
        streams.secrets.append(args.webhook_secret)
    for batch_id in _batch_ids(args):
        check_batch_id(batch_id)  # every ID checked before the first request
    base_url = getattr(args, "base_url", None) or env.get(BASE_URL_ENV_VAR) or DEFAULT_BASE_URL
    async with Client(api_key=api_key, base_url=base_url) as client:
        return await _commands()[args.command](client, args, streams)


def _commands() -> dict[str, Command]:
    from .commands import (  # noqa: PLC0415 - import what the command needs, when it runs
        cancel_command,
        create_command,
        delete_command,
        list_command,
        status_command,
    )
    from .results import results_command  # noqa: PLC0415
    from .run import run_command  # noqa: PLC0415
    from .watch import watch_command  # noqa: PLC0415

    return {
        "status": status_command,
        "list": list_command,
        "watch": watch_command,
        "results": results_command,
        "cancel": cancel_command,
        "delete": delete_command,
        "create": create_command,
        "run": run_command,
    }


def _batch_ids(args: argparse.Namespace) -> list[str]:
    ids = list(getattr(args, "batch_ids", None) or ())
    if getattr(args, "batch_id", None) is not None:
        ids.append(args.batch_id)
    return ids


def _first(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    return next((env[name] for name in names if env.get(name)), None)


# Expected failures, most specific first: (type, exit status). API failures read as
# `failure_text` words them, the same in every command.
_FAILURES: tuple[tuple[type[Exception], int], ...] = (
    (InvalidBatchIdError, EXIT_USAGE),
    (InvalidRequestError, EXIT_USAGE),
    (ConfigurationError, EXIT_USAGE),
    (AuthenticationError, EXIT_USAGE),
    (PermissionDeniedError, EXIT_USAGE),
    (BadRequestError, EXIT_USAGE),
    (AsyncBatchError, EXIT_FAILED),
)


def _describe(exc: Exception, args: argparse.Namespace) -> tuple[str, int]:
    """The error line and exit status for an expected failure; re-raises anything else."""
    if isinstance(exc, CommandError):
        return str(exc), exc.status
    for kind, status in _FAILURES:
        if isinstance(exc, kind):
            if isinstance(exc, ValueError | ConfigurationError):  # the caller's mistake
                return f"{args.command}: {exc}", status
            batch_id = getattr(args, "batch_id", None)
            where = f"{batch_id}: " if isinstance(exc, NotFoundError) and batch_id else ""
            return where + failure_text(exc), status
    raise exc  # a ValueError we did not expect is a bug: let it show
