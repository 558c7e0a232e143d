"""`serve_webhooks`: a webhook endpoint beside a watcher, for the length of one ``async with``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from aiohttp import web

from .event import WebhookEvent
from .receiver import (
    DEFAULT_COALESCE,
    DEFAULT_MAX_BODY,
    DEFAULT_PATH,
    Refreshable,
    WebhookReceiver,
)
from .signature import DEFAULT_TOLERANCE, Secrets


@dataclass(frozen=True, slots=True)
class WebhookServer:
    """A running endpoint: where it listens, and the receiver behind it."""

    receiver: WebhookReceiver
    host: str
    port: int
    """The bound port (the one the OS chose when you asked for 0)."""
    path: str

    @property
    def url(self) -> str:
        """``http://host:port/path``: register the public URL that leads here."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


@asynccontextmanager
async def serve_webhooks(
    watcher: Refreshable | None,
    *,
    secret: Secrets,
    host: str = "127.0.0.1",
    port: int = 0,
    path: str = DEFAULT_PATH,
    on_event: Callable[[WebhookEvent], object] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_body: int = DEFAULT_MAX_BODY,
    shutdown_timeout: float = 5.0,
    clock: Callable[[], float] = time.time,
    coalesce: float | None = DEFAULT_COALESCE,
) -> AsyncIterator[WebhookServer]:
    """Serve a `WebhookReceiver` for ``watcher`` while the block runs.

    ``async with serve_webhooks(watcher, secret=..., port=8080) as server:``
    answers ``POST server.path`` on ``host:port`` (``port=0``: any free
    port, see ``server.port``). Leaving the block stops listening, lets
    requests in progress finish for up to ``shutdown_timeout`` seconds, and
    detaches the watcher; nothing keeps running afterwards, even when the
    block is cancelled. TLS is left to the proxy in front, as usual. The
    other options are `WebhookReceiver`'s.
    """
    receiver = WebhookReceiver(
        secret,
        watchers=() if watcher is None else (watcher,),
        on_event=on_event,
        tolerance=tolerance,
        clock=clock,
        coalesce=coalesce,
    )
    runner = web.AppRunner(
        receiver.app(path, max_body=max_body),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield WebhookServer(receiver=receiver, host=host, port=bound_port, path=path)
    finally:
        if watcher is not None:
            receiver.detach(watcher)
        receiver.close()
        # Shielded: a cancelled block must still close its sockets and handlers.
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
