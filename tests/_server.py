"""A scripted in-process aiohttp.web server on 127.0.0.1 for transport and client tests.

Each test says what the server answers, per method and path, as a queue of
`Reply` values (or functions of the request); the last reply repeats once the
queue runs dry. Every request is recorded, so a test can count attempts and
read the headers and query the client sent. Paths are given without the
``/v1.3`` prefix, which the server strips, as the real API's base URL has it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import anyio
from aiohttp import web

from asyncbatch import Client, RetryPolicy

API_KEY = "tl-test-key-0123456789abcdef-SECRET"
PREFIX = "/v1.3"
BATCH_ID = "68f4ddaf8aaa60d33df0e800"

# A policy that retries quickly, so the retry tests read in virtual seconds.
FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.1, max_delay=1.0, max_retry_after=60.0)


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``body`` may be bytes, text, or a JSON value (dict or list). ``delay``
    holds the answer back (virtual seconds) before its headers go out.
    ``chunks`` streams the body in these pieces instead; ``stall`` then
    waits (virtual seconds) before the end, and ``cut`` drops the connection
    instead of ending the body.
    """

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunks: Sequence[bytes] | None = None
    stall: float = 0.0
    cut: bool = False

    def payload(self) -> bytes:
        """The body as bytes on the wire."""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def error(status: int, code: str, message: str = "", **headers: str) -> Reply:
    """An error answer in the documented nested ``{"error": {...}}`` shape."""
    return Reply(status, {"error": {"code": code, "message": message}}, headers=headers)


@dataclass(frozen=True)
class Seen:
    """A request as the server received it (header names lower-cased)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    body: bytes


Script = Reply | Callable[[Seen], Reply]


class ScriptedServer:
    """``async with ScriptedServer() as server:``; then ``server.on(...)`` and ``server.url``."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._scripts: dict[tuple[str, str], list[Script]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def on(self, method: str, path: str, *replies: Script) -> None:
        """Answer ``method path`` with ``replies`` in turn, repeating the last one."""
        self._scripts[(method, path)] = list(replies)

    def seen(self, method: str, path: str) -> list[Seen]:
        """The requests received for ``method path``."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.SockSite(self._runner, _listening_socket())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}{PREFIX}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            method=request.method,
            path=request.path.removeprefix(PREFIX),
            query=list(request.query.items()),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.read(),
        )
        self.requests.append(seen)
        queue = self._scripts.get((seen.method, seen.path))
        if not queue:
            return web.Response(status=418, text=f"unscripted {seen.method} {seen.path}")
        script = queue.pop(0) if len(queue) > 1 else queue[0]
        reply = script if isinstance(script, Reply) else script(seen)
        if reply.delay:
            await anyio.sleep(reply.delay)
        if reply.chunks is None:
            return web.Response(status=reply.status, body=reply.payload(), headers=reply.headers)
        return await _stream(request, reply)


async def _stream(request: web.Request, reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    for chunk in reply.chunks or ():
        await response.write(chunk)
    if reply.stall:
        await anyio.sleep(reply.stall)
    if reply.cut:
        # Drop the socket before the terminating chunk: the client sees a body cut short.
        assert request.transport is not None
        request.transport.abort()
        return response
    await response.write_eof()
    return response


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def unused_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def connected(**client_options: Any) -> AsyncIterator[tuple[ScriptedServer, Client]]:
    """A fresh server and a client pointed at it (fast retries unless ``retry=`` says else)."""
    client_options.setdefault("retry", FAST_RETRY)
    async with (
        ScriptedServer() as server,
        Client(api_key=API_KEY, base_url=server.url, **client_options) as client,
    ):
        yield server, client


# Example bodies of the reference (section 8), verbatim where it gives them.

COMMON: dict[str, Any] = {
    "batch_id": BATCH_ID,
    "analysis_mode": "general",
    "model_name": "pegasus1.5",
    "total_items": 4,
    "created_at": "2026-07-20T10:00:00Z",
    "expires_at": "2026-07-21T10:00:00Z",
}

STATUS_BODIES: dict[str, dict[str, Any]] = {
    "pending": {**COMMON, "status": "pending", "queued_items": 4, "processing_items": 0,
                "ready_items": 0, "failed_items": 0, "canceled_items": 0},
    "processing": {**COMMON, "status": "processing", "queued_items": 1, "processing_items": 1,
                   "ready_items": 1, "failed_items": 1, "canceled_items": 0},
    "canceling": {**COMMON, "status": "canceling", "queued_items": 0, "processing_items": 1,
                  "ready_items": 1, "failed_items": 1, "canceled_items": 1},
    "canceled": {**COMMON, "status": "canceled", "queued_items": 0, "processing_items": 0,
                 "ready_items": 2, "failed_items": 1, "canceled_items": 1,
                 "canceled_at": "2026-07-20T10:20:00Z"},
    "completed": {**COMMON, "status": "completed", "queued_items": 0, "processing_items": 0,
                  "ready_items": 3, "failed_items": 1, "canceled_items": 0,
                  "completed_at": "2026-07-20T11:00:00Z",
                  "webhooks": [{"url": "https://example.com/tl-hook", "delivered": True,
                                "attempts": 1}]},
    "expired": {**COMMON, "status": "expired", "queued_items": 0, "processing_items": 0,
                "ready_items": 2, "failed_items": 0, "canceled_items": 2,
                "expired_at": "2026-07-21T10:00:00Z",
                "webhooks": [{"url": "https://example.com/tl-hook", "delivered": False,
                              "attempts": 3, "last_error": "connection refused"}]},
}  # fmt: skip

LIST_BODY: dict[str, Any] = {
    "data": [STATUS_BODIES["processing"]],
    "page_info": {"limit_per_page": 10, "page": 1, "total_page": 1, "total_results": 1},
}

CREATE_REQUEST: dict[str, Any] = {
    "model_name": "pegasus1.5",
    "analysis_mode": "general",
    "defaults": {
        "prompt": {"input_text": "Generate a 3-sentence executive summary of this video."},
        "temperature": 0.2,
        "max_tokens": 4096,
    },
    "requests": [
        {"video": {"type": "asset_id", "asset_id": "6298d673f1090f1100476d4c"},
         "custom_id": "summary-001"},
        {"video": {"type": "asset_id", "asset_id": "6298d673f1090f1100476d4d"},
         "custom_id": "summary-002"},
        {"video": {"type": "asset_id", "asset_id": "6298d673f1090f1100476d4e"}},
    ],
}  # fmt: skip

CREATE_RESPONSE: dict[str, Any] = {
    "batch_id": BATCH_ID,
    "status": "pending",
    "total_items": 3,
    "created_at": "2026-07-20T10:00:00Z",
    "expires_at": "2026-07-21T10:00:00Z",
    "items": [
        {"task_id": "68f4ddaf8aaa60d33df0e900", "custom_id": "summary-001"},
        {"task_id": "68f4ddaf8aaa60d33df0e901", "custom_id": "summary-002"},
        {"task_id": "68f4ddaf8aaa60d33df0e902", "custom_id": None},
    ],
}

RESULT_LINES: list[bytes] = [
    b'{"task_id":"68f4ddaf8aaa60d33df0e900","custom_id":"summary-001","status":"ready",'
    b'"data":{"generation_id":"gen_xyz789","data":"This video covers the keynote launch...",'
    b'"finish_reason":"stop","usage":{"output_tokens":150,"input_tokens":45}}}',
    b'{"task_id":"68f4ddaf8aaa60d33df0e901","custom_id":"summary-002","status":"failed",'
    b'"error":{"code":"asset_unavailable","message":"The asset could not be read."}}',
    b'{"task_id":"68f4ddaf8aaa60d33df0e902","custom_id":"summary-003","status":"processing"}',
    b'{"task_id":"68f4ddaf8aaa60d33df0e903","custom_id":"summary-004","status":"queued"}',
    b'{"task_id":"68f4ddaf8aaa60d33df0e904","custom_id":null,"status":"canceled"}',
]

TIME_BASED_LINE = (
    b'{"task_id":"68f4ddaf8aaa60d33df0e905","custom_id":"seg-001","status":"ready",'
    b'"data":{"generation_id":"gen_abc123","data":"{\\"scenes\\":[{\\"start_time\\":0.0,'
    b'\\"end_time\\":12.5,\\"metadata\\":{\\"label\\":\\"intro\\"}}]}","finish_reason":"stop",'
    b'"usage":{"output_tokens":80}}}'
)

FLAT_429 = Reply(
    429,
    {
        "code": "too_many_requests",
        "message": "You have exceeded the rate limit (100req/1day). "
        "Please try again later after 2025-11-08T01:20:49Z.",
    },
    headers={
        "retry-after": "11382",
        "x-ratelimit-limit": "100",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-used": "100",
        "x-ratelimit-reset": "1762564849",
    },
)
