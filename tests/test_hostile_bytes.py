"""Hostile bytes at every public entry point: deep nesting, compression bombs, endless lines.

Every decode site (status, list, create and cancel bodies, error bodies, results
lines, webhook deliveries, stored records, the command line's input files)
gets a body nested thousands of levels deep, which makes msgspec raise
`RecursionError`; each must answer with a typed error instead. Every body
reader gets a gzip or deflate bomb with an honest ``Content-Length``: the cap
counts decompressed bytes, so memory stays bounded.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from asyncbatch import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    Client,
    DecodeError,
    EventKind,
    RetryPolicy,
    ServerError,
    WebhookVerificationError,
)
from asyncbatch._stores.memory import decode_record
from asyncbatch._transport import MAX_BODY_BYTES, MAX_LINE_BYTES, LineSplitter
from asyncbatch.webhooks import (
    WebhookPayloadError,
    WebhookReceiver,
    decode_event,
    sign,
    verify,
)
from tests._server import (
    API_KEY,
    BATCH_ID,
    CREATE_REQUEST,
    RESULT_LINES,
    STATUS_BODIES,
    Reply,
    connected,
)
from tests.test_cli_support import cli

pytestmark = pytest.mark.anyio

DEPTH = 5_000
DEEP_ARRAY = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
# Hidden under a field every struct ignores: the decoder still walks it, and recurses.
DEEP_BODIES = {
    "array under an unknown field": b'{"extra":' + DEEP_ARRAY + b"}",
    "object under an unknown field": b'{"extra":' + DEEP_OBJECT + b"}",
}
ONE_TRY = RetryPolicy(max_attempts=1)
BOMB_BYTES = 4 * MAX_BODY_BYTES
MEMORY_BOUND = 3 * MAX_BODY_BYTES
"""Peak traced memory a bomb may cost: the capped body, plus slack for buffers and chunks."""
SECRET = "whsec-hostile-bytes-SECRET"
NOW = 1_784_544_000
RESULTS_PATH = f"/analyze/batches/{BATCH_ID}/results"


@functools.cache
def _bomb(encoding: str, payload_byte: bytes = b"0") -> bytes:
    """`BOMB_BYTES` of one byte, compressed: a few hundred KB on the wire."""
    plain = payload_byte * BOMB_BYTES
    return gzip.compress(plain, 6) if encoding == "gzip" else zlib.compress(plain, 6)


def _deep_delivery(depth: int = DEPTH) -> bytes:
    nested = "[" * depth + "]" * depth
    envelope = '{"id":"whe_1","created_at":"2026-07-20T10:40:00Z","type":"analyze.task.ready"'
    return f'{envelope},"data":{{"x":{nested}}}}}'.encode()


async def _peak_memory(call: Callable[[], Awaitable[object]]) -> tuple[BaseException | None, int]:
    """What ``call`` raised (or None), and the peak of traced memory while it ran."""
    tracemalloc.start()
    try:
        await call()
    except BaseException as exc:  # returned to the test, which checks its type
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


# -- deep nesting: every decode site -----------------------------------------------------


CALLS: dict[str, tuple[str, str, Callable[[Client], Awaitable[object]]]] = {
    "retrieve": (
        "GET",
        f"/analyze/batches/{BATCH_ID}",
        lambda c: c.batches.retrieve(BATCH_ID, retry=ONE_TRY),
    ),
    "cancel": (
        "POST",
        f"/analyze/batches/{BATCH_ID}/cancel",
        lambda c: c.batches.cancel(BATCH_ID, retry=ONE_TRY),
    ),
    "create": (
        "POST",
        "/analyze/batches",
        lambda c: c.batches.create(CREATE_REQUEST["requests"], retry=ONE_TRY),
    ),
    "list": ("GET", "/analyze/batches", lambda c: anext(c.batches.list(retry=ONE_TRY))),
}


@pytest.mark.parametrize("shape", DEEP_BODIES)
@pytest.mark.parametrize("call", CALLS)
async def test_deeply_nested_body_is_a_decode_error_not_recursion_error(
    call: str, shape: str
) -> None:
    """retrieve, cancel, create and list raise DecodeError (with the body's start) for a
    body nested 5,000 levels deep, never a raw RecursionError."""
    method, path, invoke = CALLS[call]
    body = DEEP_BODIES[shape]
    async with connected() as (server, client):
        server.on(method, path, Reply(200, body))
        with pytest.raises(DecodeError, match="nested too deeply") as caught:
            await invoke(client)
    assert caught.value.snippet == body[:200]
    assert caught.value.__suppress_context__  # the decoder's RecursionError is not shown


@pytest.mark.parametrize(("status", "kind"), [(400, BadRequestError), (503, ServerError)])
async def test_deeply_nested_error_body_is_a_status_error_with_its_start(
    status: int, kind: type[APIStatusError]
) -> None:
    """An error answer whose body is nested too deeply still raises its status error; the
    body's start becomes the message, as for any body that is not an error object."""
    body = DEEP_BODIES["array under an unknown field"]
    async with connected() as (server, client):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(status, body))
        with pytest.raises(kind) as caught:
            await client.batches.retrieve(BATCH_ID, retry=ONE_TRY)
    assert caught.value.code is None
    assert caught.value.message == body[:200].decode()


async def test_deeply_nested_results_line_is_a_decode_error_and_the_stream_goes_on() -> None:
    """A deep results line raises DecodeError naming its line; the next line still decodes."""
    deep = DEEP_BODIES["object under an unknown field"]
    payload = RESULT_LINES[0] + b"\n" + deep + b"\n" + RESULT_LINES[1] + b"\n"
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, payload))
        async with client.batches.results(BATCH_ID) as items:
            first = await anext(items)
            with pytest.raises(DecodeError, match="nested too deeply") as caught:
                await anext(items)
            third = await anext(items)
    assert caught.value.line_number == 2
    assert (first.custom_id, third.custom_id) == ("summary-001", "summary-002")


async def test_a_watcher_treats_a_deeply_nested_body_as_one_bad_answer() -> None:
    """The watcher retries past a deep body as past any bad one, and the batch ends `done`."""
    async with connected() as (server, client):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(200, STATUS_BODIES["processing"]),
            Reply(200, DEEP_BODIES["array under an unknown field"]),
            Reply(200, STATUS_BODIES["completed"]),
        )
        async with client.watch([BATCH_ID], min_interval=1.0, max_interval=5.0) as watcher:
            kinds = [e.kind async for e in watcher]
    assert kinds == [EventKind.SEEN, EventKind.DONE]


def test_deeply_nested_webhook_delivery_is_a_payload_error() -> None:
    """verify() and decode_event() raise WebhookPayloadError, which is also a DecodeError, for
    a signed delivery whose data is nested too deeply; the receiver answers 400."""
    body = _deep_delivery()
    signature = sign(body, SECRET, timestamp=NOW)
    with pytest.raises(WebhookPayloadError, match="nested too deeply") as caught:
        verify(body, signature, SECRET, now=NOW)
    assert isinstance(caught.value, DecodeError)
    assert isinstance(caught.value, WebhookVerificationError)
    with pytest.raises(DecodeError):
        decode_event(body)
    receiver = WebhookReceiver(SECRET, clock=lambda: NOW)
    assert receiver.receive(body, signature).status == 400
    assert receiver.statistics().malformed == 1


def test_deeply_nested_stored_record_is_a_decode_error() -> None:
    """A state store's record that is nested too deeply (a corrupt row) is a DecodeError."""
    with pytest.raises(DecodeError, match="stored watch record"):
        decode_record(DEEP_BODIES["array under an unknown field"])


@pytest.mark.parametrize(
    "argv",
    [
        ("status", BATCH_ID),
        ("status", "--json", BATCH_ID),
        ("list",),
        ("cancel", BATCH_ID),
        ("results", BATCH_ID),
    ],
)
async def test_the_command_line_prints_one_error_line_for_a_deeply_nested_body(
    argv: tuple[str, ...],
) -> None:
    """Every API command answers a deep body with one error line and status 1, no traceback."""
    deep = DEEP_BODIES["array under an unknown field"]
    async with connected() as (server, _):
        for method, path in [
            ("GET", f"/analyze/batches/{BATCH_ID}"),
            ("POST", f"/analyze/batches/{BATCH_ID}/cancel"),
            ("GET", "/analyze/batches"),
        ]:
            server.on(method, path, Reply(200, deep))
        outcome = await cli(*argv, base_url=server.url)
    assert outcome.status == 1
    assert "nested too deeply" in outcome.error_line()


async def test_the_command_line_refuses_a_deeply_nested_requests_file(tmp_path: Path) -> None:
    """``create`` with a requests file nested too deeply is a usage error naming the line."""
    path = tmp_path / "requests.jsonl"
    path.write_bytes(DEEP_ARRAY + b"\n")
    outcome = await cli("create", str(path), base_url="http://127.0.0.1:9/v1.3")
    assert outcome.status == 2
    assert "line 1 is not valid JSON (nested too deeply)" in outcome.error_line()


async def test_webhook_verify_refuses_a_deeply_nested_delivery(tmp_path: Path) -> None:
    """``webhook-verify`` answers a signed but deep delivery with one error line."""
    body = _deep_delivery()
    path = tmp_path / "delivery.json"
    path.write_bytes(body)
    signature = sign(body, SECRET, timestamp=NOW)
    outcome = await cli(
        "webhook-verify", str(path), "--signature", signature, "--secret", SECRET,
        "--now", str(NOW),
    )  # fmt: skip
    assert outcome.status == 1
    assert "nested too deeply" in outcome.error_line()
    assert SECRET not in outcome.err


# -- compression bombs -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("status", [200, 500])
async def test_a_compression_bomb_with_content_length_is_refused_in_bounded_memory(
    encoding: str, status: int
) -> None:
    """A gzip or deflate body with an honest Content-Length that decompresses to 4x the cap
    is refused as it passes the cap, for a good answer or an error, and memory stays bounded."""
    bomb = _bomb(encoding)
    assert len(bomb) < MAX_BODY_BYTES // 16
    async with connected() as (server, client):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(status, bomb, headers={"Content-Encoding": encoding}),
        )
        error, peak = await _peak_memory(lambda: client.batches.retrieve(BATCH_ID, retry=ONE_TRY))
        assert server.seen("GET", f"/analyze/batches/{BATCH_ID}")[0].method == "GET"
    assert isinstance(error, DecodeError)
    assert f"over the {MAX_BODY_BYTES} byte limit" in str(error)
    assert peak < MEMORY_BOUND


async def test_a_results_line_over_the_cap_is_reported_and_the_stream_goes_on() -> None:
    """A gzip results body whose first line decompresses to 4x the cap: that line raises
    DecodeError (line 1, its start kept), the next line decodes, and memory stays bounded."""
    plain = b"7" * BOMB_BYTES + b"\n" + RESULT_LINES[1] + b"\n"
    body = gzip.compress(plain, 6)
    outcomes: list[object] = []

    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, body, headers={"Content-Encoding": "gzip"}))

        async def read_all() -> None:
            async with client.batches.results(BATCH_ID) as items:
                while True:
                    try:
                        outcomes.append(await anext(items))
                    except StopAsyncIteration:
                        return
                    except DecodeError as exc:
                        outcomes.append(exc)

        error, peak = await _peak_memory(read_all)
    assert error is None
    first, second = outcomes
    assert isinstance(first, DecodeError)
    assert (first.line_number, first.snippet) == (1, b"7" * 200)
    assert f"over the {MAX_LINE_BYTES} byte limit" in str(first)
    assert getattr(second, "custom_id", None) == "summary-002"
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("max_body", [1024 * 1024, 0])
async def test_a_gzip_webhook_bomb_gets_413_in_bounded_memory(max_body: int) -> None:
    """A gzip delivery that decompresses past the limit is refused with 413 before its
    signature is checked, whether the app's own limit is 1 MiB or unlimited (0)."""
    receiver = WebhookReceiver(SECRET, clock=lambda: NOW)
    app = receiver.app(max_body=max_body)
    bomb = _bomb("gzip")
    async with TestServer(app) as server, aiohttp.ClientSession() as session:

        async def post() -> None:
            async with session.post(
                server.make_url("/webhooks/twelvelabs"),
                data=bomb,
                headers={"Content-Encoding": "gzip", "TL-Signature": "t=1,v1=00"},
                auto_decompress=False,
            ) as response:
                assert response.status == 413

        error, peak = await _peak_memory(post)
    assert error is None
    assert peak < MEMORY_BOUND
    assert receiver.statistics().malformed == 1


def test_verify_refuses_a_body_over_the_cap_before_hashing_it() -> None:
    """verify() refuses a body over the cap with WebhookVerificationError, even correctly
    signed, and the receiver's receive() answers 413."""
    body = b" " * (MAX_BODY_BYTES + 1)
    signature = sign(body, SECRET, timestamp=NOW)
    with pytest.raises(WebhookVerificationError, match="byte limit"):
        verify(body, signature, SECRET, now=NOW)
    assert WebhookReceiver(SECRET, clock=lambda: NOW).receive(body, signature).status == 413


# -- line splitting ----------------------------------------------------------------------


def _split_all(
    chunks: list[bytes], max_line: int = MAX_LINE_BYTES
) -> list[tuple[int, bytes, bool]]:
    splitter = LineSplitter(max_line)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.finish()


def _reference(data: bytes, max_line: int) -> list[tuple[int, bytes, bool]]:
    pieces = data.split(b"\n")
    if pieces and not pieces[-1].strip():
        pieces.pop()  # a trailing newline, or trailing blanks, end no line
    lines = []
    for number, piece in enumerate(pieces, start=1):
        if len(piece) > max_line:
            lines.append((number, piece[:200], True))
        elif piece.strip():
            lines.append((number, piece.removesuffix(b"\r"), False))
    return lines


@given(
    data=st.lists(st.sampled_from([b"a", b"\n", b"\r", b" ", b'{"k":1}', b"x" * 90]), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    max_line=st.sampled_from([200, 300, 1000]),
)
def test_line_splitting_matches_a_whole_body_split_wherever_the_chunks_break(
    data: list[bytes], cuts: list[int], max_line: int
) -> None:
    """However the body is cut into chunks, the lines (numbers, CR removal, blank lines,
    oversized lines) are those of splitting the whole body at once."""
    body = b"".join(data)
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    assert _split_all(chunks, max_line) == _reference(body, max_line)


def test_line_splitting_is_linear_in_the_bytes_received() -> None:
    """A line just under the cap, arriving in 4 KiB chunks (4,096 of them), splits in well
    under a second: rescanning the pending line on each chunk would copy 32 GiB."""
    line = b"x" * (MAX_LINE_BYTES - 1)
    chunks = [line[i : i + 4096] for i in range(0, len(line), 4096)] + [b"\n", RESULT_LINES[0]]
    started = time.perf_counter()
    lines = _split_all(chunks)
    elapsed = time.perf_counter() - started
    assert [(n, len(data), over) for n, data, over in lines] == [
        (1, len(line), False),
        (2, len(RESULT_LINES[0]), False),
    ]
    assert elapsed < 1.0


# -- time bounds on the results stream ---------------------------------------------------


async def _trickle_headers(stream: anyio.abc.SocketStream) -> None:
    """Answer any request with headers sent one byte a second, and never finish them."""
    async with stream:
        await stream.receive()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nX-Padding: " + b"a" * 4096
        for byte in head:
            await stream.send(bytes([byte]))
            await anyio.sleep(1.0)


async def test_a_server_trickling_its_headers_cannot_hold_results_open() -> None:
    """Each attempt to open a results stream gets the client's timeout for its headers in
    all, however steadily they trickle: the stream fails with APITimeoutError in time."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, _trickle_headers)
        base_url = f"http://127.0.0.1:{port}/v1.3"
        async with Client(api_key=API_KEY, base_url=base_url, timeout=5.0, retry=ONE_TRY) as c:
            started = anyio.current_time()
            with pytest.raises(APITimeoutError):
                async with c.batches.results(BATCH_ID) as items:
                    await anext(items)
            elapsed = anyio.current_time() - started
        group.cancel_scope.cancel()
    assert 5.0 <= elapsed < 6.0


async def test_results_timeout_bounds_the_whole_download() -> None:
    """``results(timeout=10)`` ends a stream that stalls after its first line at 10 s, not at
    the client's 60 s bound on one wait for data."""
    async with connected(timeout=60.0) as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=[RESULT_LINES[0] + b"\n"], stall=100))
        started = anyio.current_time()
        items = client.batches.results(BATCH_ID, timeout=10.0)
        first = await anext(items)
        with pytest.raises(APITimeoutError, match=r"deadline|no data for"):
            await anext(items)
        elapsed = anyio.current_time() - started
    assert first.custom_id == "summary-001"
    assert 10.0 <= elapsed < 10.5


async def test_results_timeout_bounds_opening_with_its_retries() -> None:
    """``results(timeout=5)`` against a server slow to answer raises APITimeoutError at 5 s,
    retries included, while the client's own timeout is 60 s."""
    async with connected(timeout=60.0) as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, RESULT_LINES[0], delay=30))
        started = anyio.current_time()
        with pytest.raises(APITimeoutError):
            async with client.batches.results(BATCH_ID, timeout=5.0) as items:
                await anext(items)
        elapsed = anyio.current_time() - started
    assert 5.0 <= elapsed < 5.5


async def test_an_oversized_header_is_a_connection_error() -> None:
    """A response header over aiohttp's 8,190-byte field limit raises APIConnectionError."""
    async with connected() as (server, client):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(200, STATUS_BODIES["pending"], headers={"X-Padding": "a" * 20_000}),
        )
        with pytest.raises(APIConnectionError):
            await client.batches.retrieve(BATCH_ID, retry=ONE_TRY)
