"""``--metrics-port``: Prometheus text at ``/metrics`` while a command runs.

`metrics_endpoint` is all a command needs (``watch`` uses it; ``run`` can wrap
itself in it the same way): it installs `PrometheusHooks` on a registry of its
own, beside any hooks already installed, serves that registry on the event
loop (no thread), and takes both away when the command ends.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiohttp import web

from .._telemetry import set_telemetry_hooks, telemetry_hooks
from .._telemetry_prometheus import PrometheusHooks
from .exits import EXIT_FAILED, EXIT_USAGE
from .io import CommandError, Streams

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@asynccontextmanager
async def metrics_endpoint(
    args: argparse.Namespace, streams: Streams, command: str
) -> AsyncIterator[str | None]:
    """Serve ``/metrics`` on ``--metrics-host:--metrics-port``; yields its URL (None without
    ``--metrics-port``). A usage error (2) without ``prometheus_client``, 1 when the port is
    taken."""
    port: int | None = getattr(args, "metrics_port", None)
    if port is None:
        yield None
        return
    registry = _registry(command)
    previous = telemetry_hooks()
    runner = web.AppRunner(_app(registry), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.metrics_host, port)
        try:
            await site.start()
        except OSError as exc:
            where = f"{args.metrics_host}:{port}"
            message = f"{command}: cannot serve metrics on {where}: {exc.strerror or exc}"
            raise CommandError(message, EXIT_FAILED) from None
        url = f"http://{_host(args.metrics_host)}:{_bound_port(site)}/metrics"
        set_telemetry_hooks(*previous, PrometheusHooks(registry))
        streams.note(f"{command}: metrics at {url}")
        try:
            yield url
        finally:
            set_telemetry_hooks(*previous)
    finally:
        await runner.cleanup()


def _registry(command: str) -> CollectorRegistry:
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector  # noqa: PLC0415
    except ImportError:
        raise CommandError(
            f"{command}: --metrics-port needs prometheus_client: "
            "pip install prometheus_client (the 'asyncbatch[prometheus]' extra)",
            EXIT_USAGE,
        ) from None
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU and memory of this process, where the OS tells
    return registry


def _app(registry: CollectorRegistry) -> web.Application:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening server here; port 0 needs the real one
    sockets = getattr(server, "sockets", None) or ()
    for sock in sockets:
        port: int = sock.getsockname()[1]
        return port
    return site._port  # pragma: no cover - a started TCP site always has its socket


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
