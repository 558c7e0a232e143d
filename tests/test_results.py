"""Streaming a batch's JSON Lines results: line splitting, bad lines, broken streams, release."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncbatch import (
    APIConnectionError,
    APITimeoutError,
    Client,
    DecodeError,
    NotFoundError,
    ResultItem,
    ResultStream,
    RetryPolicy,
)
from asyncbatch._models import result_decoder
from tests._server import (
    API_KEY,
    BATCH_ID,
    FAST_RETRY,
    RESULT_LINES,
    STATUS_BODIES,
    TIME_BASED_LINE,
    Reply,
    ScriptedServer,
    connected,
    error,
)

pytestmark = pytest.mark.anyio

RESULTS_PATH = f"/analyze/batches/{BATCH_ID}/results"
STATUS_PATH = f"/analyze/batches/{BATCH_ID}"
BAD_LINE = b'{"task_id":"68f4ddaf8aaa60d33df0e9ff","custom_id":"x","status":7}'


async def _collect(stream: ResultStream) -> list[ResultItem]:
    async with stream as items:
        return [item async for item in items]


async def test_every_example_line_is_streamed_in_order() -> None:
    """The reference's results lines, newline-terminated, come out as items in order."""
    body = b"\n".join([*RESULT_LINES, TIME_BASED_LINE]) + b"\n"
    async with connected() as (server, client):
        server.on(
            "GET", RESULTS_PATH, Reply(200, body, headers={"content-type": "application/jsonl"})
        )
        items = await _collect(client.batches.results(BATCH_ID))
    assert [i.task_id[-3:] for i in items] == ["900", "901", "902", "903", "904", "905"]
    assert items[-1].custom_id == "seg-001"
    assert server.requests[0].headers["x-api-key"] == API_KEY


async def test_crlf_blank_lines_and_a_last_line_without_newline() -> None:
    """CRLF endings and blank lines are tolerated; an unterminated last line still counts."""
    body = RESULT_LINES[0] + b"\r\n\r\n" + RESULT_LINES[1] + b"\n\n  \n" + RESULT_LINES[2]
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, body))
        items = await _collect(client.batches.results(BATCH_ID))
    assert [i.status for i in items] == ["ready", "failed", "processing"]


async def test_lines_split_across_chunks_at_every_byte() -> None:
    """Lines cut anywhere between chunks, a multi-byte character included, decode whole."""
    line = RESULT_LINES[3].replace(b"summary-004", "r\u00e9sum\u00e9-\u2603".encode())
    body = line + b"\n" + RESULT_LINES[4] + b"\n"
    chunks = [body[i : i + 3] for i in range(0, len(body), 3)]
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=chunks))
        items = await _collect(client.batches.results(BATCH_ID))
    assert [i.custom_id for i in items] == ["r\u00e9sum\u00e9-\u2603", None]


@st.composite
def _chunked_bodies(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """A results body (any line endings, blank lines, final newline or not) cut anywhere."""
    picks = draw(st.lists(st.integers(0, len(RESULT_LINES) - 1), max_size=6))
    body = b""
    for pick in picks:
        body += RESULT_LINES[pick] + draw(st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\n \n"]))
    if draw(st.booleans()) and picks:
        body = body.rstrip(b"\r\n ")  # the last line without its newline
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=8)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return [c for c in chunks if c], picks


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_chunked_bodies())
async def test_any_chunking_and_line_endings_give_the_same_items(
    case: tuple[list[bytes], list[int]],
) -> None:
    """However the body is cut into chunks and whatever the line endings, every item comes once."""
    chunks, picks = case
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=chunks))
        items = await _collect(client.batches.results(BATCH_ID))
    assert [i.task_id for i in items] == [
        result_decoder.decode(RESULT_LINES[p]).task_id for p in picks
    ]


async def test_a_bad_line_names_its_number_and_the_stream_goes_on() -> None:
    """A schema-breaking line raises DecodeError with its 1-based line; anext() then continues."""
    body = b"\n".join([RESULT_LINES[0], b"", BAD_LINE, RESULT_LINES[1]])
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, body))
        async with client.batches.results(BATCH_ID) as items:
            first = await anext(items)
            with pytest.raises(DecodeError) as info:
                await anext(items)
            after = await anext(items)
            with pytest.raises(StopAsyncIteration):
                await anext(items)
    assert first.status == "ready"
    assert info.value.line_number == 3
    assert info.value.snippet == BAD_LINE
    assert "line 3" in str(info.value)
    assert after.status == "failed"


async def test_non_json_line_is_a_decode_error_too() -> None:
    """A line that is not JSON at all is reported, never skipped."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, b"<html>oops</html>\n" + RESULT_LINES[0]))
        async with client.batches.results(BATCH_ID) as items:
            with pytest.raises(DecodeError) as info:
                await anext(items)
            assert (await anext(items)).status == "ready"
    assert info.value.line_number == 1


async def test_a_truncated_last_line_is_a_decode_error() -> None:
    """A body that ends cleanly inside its last line reports that line, then ends."""
    body = RESULT_LINES[0] + b"\n" + RESULT_LINES[1][:40]
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, body))
        async with client.batches.results(BATCH_ID) as items:
            assert (await anext(items)).status == "ready"
            with pytest.raises(DecodeError) as info:
                await anext(items)
            with pytest.raises(StopAsyncIteration):
                await anext(items)
    assert info.value.line_number == 2


async def test_a_stream_broken_mid_body_is_a_connection_error_and_not_restarted() -> None:
    """Items before the break arrive; then APIConnectionError, with no second request."""
    chunks = [RESULT_LINES[0] + b"\n", RESULT_LINES[1][:30]]
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=chunks, cut=True))
        async with client.batches.results(BATCH_ID) as items:
            first = await anext(items)
            with pytest.raises(APIConnectionError):
                await anext(items)
    assert first.status == "ready"
    assert len(server.requests) == 1


async def test_a_stream_that_stalls_times_out() -> None:
    """No data for longer than the client timeout raises APITimeoutError."""
    async with connected(timeout=20.0) as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=[RESULT_LINES[0] + b"\n"], stall=3600.0))
        async with client.batches.results(BATCH_ID) as items:
            await anext(items)
            start = anyio.current_time()
            with pytest.raises(APITimeoutError):
                await anext(items)
            assert anyio.current_time() - start == pytest.approx(20.0, abs=0.5)


async def test_results_whose_headers_never_come_time_out() -> None:
    """A results request left unanswered times out instead of hanging."""
    async with connected(timeout=20.0) as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, RESULT_LINES[0], delay=3600.0))
        start = anyio.current_time()
        with anyio.fail_after(1000), pytest.raises(APITimeoutError):
            await _collect(client.batches.results(BATCH_ID, retry=RetryPolicy(max_attempts=1)))
        assert anyio.current_time() - start == pytest.approx(20.0, abs=0.5)


async def test_opening_is_retried_and_404_is_not_found() -> None:
    """A 503 on open is retried; a 404 raises NotFoundError on the first anext."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(503), Reply(200, RESULT_LINES[0]))
        assert len(await _collect(client.batches.results(BATCH_ID))) == 1
        server.on("GET", RESULTS_PATH, error(404, "resource_not_exist"))
        with pytest.raises(NotFoundError):
            await _collect(client.batches.results(BATCH_ID))
    assert len(server.requests) == 3


async def test_an_empty_body_is_an_empty_stream() -> None:
    """A batch with no lines yet yields nothing and ends."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, b""))
        assert await _collect(client.batches.results(BATCH_ID)) == []


async def test_plain_async_for_runs_to_the_end() -> None:
    """Without async with, a stream read to its end works and closes itself."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, b"\n".join(RESULT_LINES)))
        items = [item async for item in client.batches.results(BATCH_ID)]
    assert len(items) == 5


@asynccontextmanager
async def _one_connection() -> AsyncIterator[tuple[ScriptedServer, Client]]:
    """A client whose pool holds a single connection: a leaked response blocks the next call."""
    async with (
        ScriptedServer() as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
        Client(api_key=API_KEY, base_url=server.url, session=session, retry=FAST_RETRY) as client,
    ):
        server.on("GET", STATUS_PATH, Reply(200, STATUS_BODIES["pending"]))
        yield server, client


async def _next_call_gets_a_connection(client: Client) -> None:
    with anyio.fail_after(5):
        await client.batches.retrieve(BATCH_ID)


async def test_leaving_early_releases_the_response() -> None:
    """Breaking out of async with after one item frees the connection."""
    async with _one_connection() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=[RESULT_LINES[0] + b"\n"], stall=3600.0))
        async with client.batches.results(BATCH_ID) as items:
            await anext(items)
        await _next_call_gets_a_connection(client)


async def test_cancelling_a_read_releases_the_response() -> None:
    """A read cancelled by the caller's timeout frees the connection, with or without async with."""
    async with _one_connection() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, chunks=[RESULT_LINES[0] + b"\n"], stall=3600.0))
        stream = client.batches.results(BATCH_ID)
        await anext(stream)
        with anyio.move_on_after(5):
            await anext(stream)
        await _next_call_gets_a_connection(client)
        with anyio.move_on_after(5):
            async with client.batches.results(BATCH_ID) as items:
                await anext(items)
                await anext(items)
        await _next_call_gets_a_connection(client)


async def test_errors_release_the_response() -> None:
    """A decode error left unhandled, a broken stream and a 404 all free the connection."""
    async with _one_connection() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, BAD_LINE + b"\n" + RESULT_LINES[0]))
        with pytest.raises(DecodeError):
            await _collect(client.batches.results(BATCH_ID))
        await _next_call_gets_a_connection(client)
        server.on("GET", RESULTS_PATH, Reply(200, chunks=[RESULT_LINES[0][:9]], cut=True))
        with pytest.raises(APIConnectionError):
            await _collect(client.batches.results(BATCH_ID))
        await _next_call_gets_a_connection(client)
        server.on("GET", RESULTS_PATH, error(404, "resource_not_exist"))
        with pytest.raises(NotFoundError):
            await _collect(client.batches.results(BATCH_ID))
        await _next_call_gets_a_connection(client)


async def test_closed_stream_ends() -> None:
    """After aclose() the stream yields nothing more, and aclose() may be repeated."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, Reply(200, b"\n".join(RESULT_LINES)))
        stream = client.batches.results(BATCH_ID)
        await anext(stream)
        await stream.aclose()
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
