"""Webhooks on the command line: ``watch --webhook-port`` and ``webhook-verify``.

`webhook_endpoint` runs a `WebhookReceiver` for ``watch`` (the watcher is
attached once it exists, so the URL can be told before the view starts).
`webhook_verify_command` checks one captured delivery offline. The secret
comes from ``--webhook-secret`` / ``--secret`` or
``$TWELVELABS_WEBHOOK_SECRET`` and is never written anywhere: `_cli.run`
scrubs it from every line, as it does the API key.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import msgspec

from .._errors import WebhookVerificationError
from ..webhooks import WebhookServer, serve_webhooks, verify
from .exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .io import CommandError, Streams
from .render import json_text

SECRET_ENV_VAR: Final = "TWELVELABS_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
WEBHOOK_INTERVAL: Final = 30.0
"""``--interval``'s default with webhooks on: deliveries, not polls, bring the news."""
WEBHOOK_MAX_INTERVAL: Final = 600.0
"""``--max-interval``'s default with webhooks on: the worst delay after a lost delivery."""

UnixClock = Callable[[], float]


def webhook_secret(given: str | None, env: Mapping[str, str], command: str) -> str:
    """The secret from the flag, else the environment; a usage error when neither has one."""
    secret = given or env.get(SECRET_ENV_VAR)
    if not secret:
        flag = "--secret" if command == "webhook-verify" else "--webhook-secret"
        raise CommandError(
            f"{command}: no webhook secret: pass {flag} or set ${SECRET_ENV_VAR}", EXIT_USAGE
        )
    return secret


@asynccontextmanager
async def webhook_endpoint(
    args: argparse.Namespace, streams: Streams, clock: UnixClock | None
) -> AsyncIterator[WebhookServer]:
    """Serve ``POST /webhooks/twelvelabs`` on ``--webhook-host:--webhook-port`` for ``watch``."""
    async with AsyncExitStack() as stack:
        endpoint = serve_webhooks(
            None,
            secret=args.webhook_secret,
            host=args.webhook_host,
            port=args.webhook_port,
            clock=clock or time.time,
        )
        try:
            server = await stack.enter_async_context(endpoint)
        except OSError as exc:
            where = f"{args.webhook_host}:{args.webhook_port}"
            raise CommandError(
                f"watch: cannot receive webhooks on {where}: {exc.strerror or exc}", EXIT_FAILED
            ) from None
        streams.note(f"watch: receiving webhooks at {server.url}")
        yield server
    stats = server.receiver.statistics()
    streams.note(
        f"watch: webhooks: {stats.accepted} accepted, {stats.duplicates} duplicate, "
        f"{stats.rejected + stats.malformed} refused"
    )


async def webhook_verify_command(
    args: argparse.Namespace, streams: Streams, env: Mapping[str, str]
) -> int:
    """Verify one captured delivery; print its event as JSON (0), or one error line (1)."""
    secret = webhook_secret(args.secret, env, "webhook-verify")
    streams.secrets.append(secret)
    body = _read_body(args.file, streams)
    try:
        event = verify(body, args.signature, secret, tolerance=args.tolerance, now=args.now)
    except WebhookVerificationError as exc:
        raise CommandError(f"webhook-verify: {exc}", EXIT_FAILED) from None
    streams.out(json_text(msgspec.to_builtins(event)))
    return EXIT_OK


def _read_body(file: str, streams: Streams) -> bytes:
    """The raw bytes as captured: the MAC covers them exactly, so no newline is added or lost."""
    if file != "-":
        try:
            with open(file, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise CommandError(
                f"webhook-verify: cannot read {file}: {exc.strerror}", EXIT_FAILED
            ) from None
    raw = getattr(streams.stdin, "buffer", None)
    return raw.read() if raw is not None else streams.stdin.read().encode()
