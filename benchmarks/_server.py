"""A minimal HTTP/1.1 server answering every status poll with one canned body.

Run as ``python -m benchmarks._server``: it binds 127.0.0.1 on a free port,
prints the port on one line and serves until stdin closes or it is terminated.
It is a raw `asyncio.Protocol`, not aiohttp.web, so that the server costs as
little CPU as possible: on a 2-core machine it competes with the client being
measured. It parses only what the benchmarks send (bodiless GETs, keep-alive).

`serve_in_subprocess` starts it in its own process, so its CPU time never
counts against the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ._bodies import BATCH_ID, NOT_FOUND_BODY, PROCESSING_BODY

STATUS_PREFIX = b"GET /v1.3/analyze/batches/"
LIST_PREFIX = b"GET /v1.3/analyze/batches?"
SWEEP_IDS = tuple(f"{n:024x}" for n in range(5))
"""The batches every list answer holds: an account has at most five active ones."""
_ID_LENGTH = len(BATCH_ID)
_ROOT = Path(__file__).resolve().parents[1]


def _response(status: bytes, body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


# The canned answer, split around its batch ID so that each poll gets back the
# ID it asked for (the watcher files a snapshot under the ID it polled).
_OK_BEFORE_ID, _OK_AFTER_ID = _response(b"200 OK", PROCESSING_BODY).split(BATCH_ID.encode())
_NOT_FOUND = _response(b"404 Not Found", NOT_FOUND_BODY)
_LIST_PAGE = _response(
    b"200 OK",
    b'{"data":['
    + b",".join(PROCESSING_BODY.replace(BATCH_ID.encode(), i.encode()) for i in SWEEP_IDS)
    + b'],"page_info":{"page":1,"limit_per_page":50,"total_page":1,"total_results":5}}',
)


def _answer(head: bytes) -> bytes:
    """The canned status for ``GET /v1.3/analyze/batches/{24-char id}``, one page of the five
    `SWEEP_IDS` for a list (``GET /v1.3/analyze/batches?...``), else a 404."""
    if head.startswith(LIST_PREFIX):
        return _LIST_PAGE
    start = len(STATUS_PREFIX)
    end = start + _ID_LENGTH
    if head.startswith(STATUS_PREFIX) and head[end : end + 1] == b" ":
        return _OK_BEFORE_ID + head[start:end] + _OK_AFTER_ID
    return _NOT_FOUND


class _StatusProtocol(asyncio.Protocol):
    """Answers each request head in the buffer; a request split across reads waits for the rest."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._transport.write(_answer(head))
            if b"\nconnection: close" in head.lower():
                self._transport.close()
                return


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_StatusProtocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    # Serve until the parent closes our stdin: a parent that dies leaves no orphan.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    server.close()


@contextlib.contextmanager
def serve_in_subprocess() -> Iterator[str]:
    """Start the server in a child process; yields its base URL (``.../v1.3``), then stops it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server"],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1.3"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    asyncio.run(_serve())
