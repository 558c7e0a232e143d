"""Bad input wherever it enters, with the watcher's side first.

Already covered elsewhere, so not repeated here: bad IDs on each client
method (tests/test_client.py), malformed and schema-breaking JSON for one
retrieve (tests/test_transport.py), results lines with CRLF, blank lines, a
truncated or schema-breaking line (tests/test_results.py), Retry-After
parsing (tests/test_retry.py), list pages whose page_info overstates or names
another page (tests/test_client.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asyncbatch import (
    Client,
    DecodeError,
    Event,
    EventKind,
    InvalidBatchIdError,
    NotFoundError,
    RetryPolicy,
    WaitTimeoutError,
    Watcher,
)
from asyncbatch._transport import MAX_BODY_BYTES
from tests._server import (
    BATCH_ID,
    CREATE_RESPONSE,
    RESULT_LINES,
    STATUS_BODIES,
    Reply,
    Seen,
    connected,
    error,
)

pytestmark = pytest.mark.anyio

OTHER_ID = "68f4ddaf8aaa60d33df0e801"
ONE_TRY = RetryPolicy(max_attempts=1)
FAST: dict[str, Any] = {"min_interval": 1.0, "max_interval": 10.0, "seed": 2}
BAD_IDS = [
    "",
    "68f4ddaf8aaa60d33df0e8000",
    "68F4DDAF8AAA60D33DF0E80",
    "68f4ddaf8aaa60d33df0e80z",
    "../tasks",
    "../../analyze/tasks/x",
    "%2F" * 8,
    "68f4ddaf8aaa60d33df0e8\u0660\u0660",
    "68f4ddaf8aaa60d33df0e8\u00e9\u00e9",
    "68f4ddaf8aaa60d33df0e80\n",
    "68f4ddaf8aaa60d33df0e800?status=completed",
    "a" * 10_000,
]


def _path(batch_id: str = BATCH_ID) -> str:
    return f"/analyze/batches/{batch_id}"


def _body(shape: str, batch_id: str = BATCH_ID, **changes: Any) -> dict[str, Any]:
    """The reference's ``shape`` status body for ``batch_id``, with fields changed."""
    return {**STATUS_BODIES[shape], "batch_id": batch_id, **changes}


# -- batch IDs ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_bad_ids_are_refused_by_every_watcher_entry(bad_id: str) -> None:
    """Watcher(...), client.watch(...), add() before and while running, refresh() and wait()
    all raise InvalidBatchIdError for a bad ID, and no request is sent for it."""
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, _body("completed")))
        with pytest.raises(InvalidBatchIdError):
            Watcher(client, [BATCH_ID, bad_id])
        with pytest.raises(InvalidBatchIdError):
            client.watch([bad_id])
        with pytest.raises(InvalidBatchIdError):
            await client.batches.wait(bad_id)
        unstarted = client.watch([])
        with pytest.raises(InvalidBatchIdError):
            unstarted.add(bad_id)
        async with client.watch([BATCH_ID], stop_when_done=False, **FAST) as watcher:
            with pytest.raises(InvalidBatchIdError):
                watcher.add(bad_id)
            with pytest.raises(InvalidBatchIdError):
                watcher.refresh(bad_id)
            event = await anext(watcher)
        assert event.kind is EventKind.DONE
    assert {seen.path for seen in server.requests} == {_path()}


async def test_a_bad_id_in_a_list_refuses_the_whole_watcher() -> None:
    """One bad ID among good ones refuses the watcher before any of them is polled."""
    async with connected() as (server, client):
        with pytest.raises(InvalidBatchIdError, match="tasks"):
            client.watch([BATCH_ID, OTHER_ID, "../tasks"])
    assert server.requests == []


# -- bodies ------------------------------------------------------------------------------

BAD_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \r\n\t ",
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "truncated": json.dumps(STATUS_BODIES["processing"]).encode()[:40],
    "json list": b"[]",
    "json string": b'"processing"',
    "json number": b"42",
    "json null": b"null",
    "missing batch_id": json.dumps(
        {k: v for k, v in _body("pending").items() if k != "batch_id"}
    ).encode(),
    "count as text": json.dumps(_body("processing", total_items="4")).encode(),
    "naive timestamp": json.dumps(_body("pending", created_at="2026-07-20T10:00:00")).encode(),
    "status as number": json.dumps(_body("pending", status=3)).encode(),
    "nan counter": b'{"batch_id": "x", "status": "pending", "total_items": NaN}',
    "deep nesting": b"[" * 50_000,
}


async def _first_listed(client: Client) -> object:
    async for batch in client.batches.list(retry=ONE_TRY):
        return batch
    return None


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", _path(), lambda c: c.batches.retrieve(BATCH_ID, retry=ONE_TRY)),
        ("POST", _path() + "/cancel", lambda c: c.batches.cancel(BATCH_ID, retry=ONE_TRY)),
        (
            "POST",
            "/analyze/batches",
            lambda c: c.batches.create(
                [{"video": {"type": "asset_id", "asset_id": "a"}}],
                defaults={"prompt": {"input_text": "x"}},
                retry=ONE_TRY,
            ),
        ),
        ("GET", "/analyze/batches", _first_listed),
    ],
)
async def test_every_bad_body_is_a_decode_error_with_its_start(
    name: str, method: str, path: str, call: Callable[[Client], Any]
) -> None:
    """Each malformed 200 body on each decoding endpoint raises DecodeError carrying a snippet."""
    body = BAD_BODIES[name]
    async with connected() as (server, client):
        status = 201 if (method, path) == ("POST", "/analyze/batches") else 200
        server.on(method, path, Reply(status, body))
        with pytest.raises(DecodeError) as info:
            await call(client)
    assert info.value.snippet == body[:200]


async def test_invalid_utf8_in_a_string_is_a_decode_error() -> None:
    """A body whose JSON string holds invalid UTF-8 is a DecodeError like any broken body."""
    body = json.dumps(_body("processing")).encode().replace(b"pegasus1.5", b"pegasus\xff\xfe")
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, body))
        with pytest.raises(DecodeError):
            await client.batches.retrieve(BATCH_ID, retry=ONE_TRY)


async def test_invalid_utf8_in_a_results_line_is_a_decode_error_naming_the_line() -> None:
    """A results line holding invalid UTF-8 raises DecodeError with its line number; the lines
    around it still arrive."""
    bad = RESULT_LINES[1].replace(b"summary-002", b"summary-\xff\xfe")
    body = b"\n".join([RESULT_LINES[0], bad, RESULT_LINES[2]]) + b"\n"
    async with connected() as (server, client):
        server.on("GET", _path() + "/results", Reply(200, body))
        async with client.batches.results(BATCH_ID) as items:
            first = await anext(items)
            with pytest.raises(DecodeError) as info:
                await anext(items)
            third = await anext(items)
    assert (first.custom_id, third.custom_id) == ("summary-001", "summary-003")
    assert info.value.line_number == 2


async def test_invalid_utf8_never_stops_the_watcher() -> None:
    """A batch whose status body holds invalid UTF-8 ends in `error` (DecodeError); the other
    batch is followed to its end."""
    bad = json.dumps(_body("processing")).encode().replace(b"pegasus1.5", b"pegasus\xff\xfe")
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, bad))
        server.on("GET", _path(OTHER_ID), Reply(200, _body("completed", OTHER_ID)))
        async with client.watch([BATCH_ID, OTHER_ID], strategy="per_id", **FAST) as watcher:
            finals = {e.batch_id: e for e in [e async for e in watcher] if e.is_final}
    assert isinstance(finals[BATCH_ID].error, DecodeError)
    assert finals[OTHER_ID].kind is EventKind.DONE


async def test_an_oversized_body_is_refused_before_reading_it() -> None:
    """A body announced (Content-Length) above the limit is a DecodeError, not a memory spike."""
    huge = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, huge))
        with pytest.raises(DecodeError, match="limit"):
            await client.batches.retrieve(BATCH_ID, retry=ONE_TRY)


async def test_an_oversized_chunked_body_is_refused_too() -> None:
    """A body over the limit without Content-Length (chunked) is refused as well."""
    chunk = b"x" * (1024 * 1024)
    chunks = [b'{"pad": "', *[chunk] * (MAX_BODY_BYTES // len(chunk) + 1), b'"}']
    padded = json.dumps(_body("completed")).encode()[:-1] + b', "pad": "'
    chunks[0] = padded
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, chunks=chunks))
        with pytest.raises(DecodeError, match="limit"):
            await client.batches.retrieve(BATCH_ID, retry=ONE_TRY)


@pytest.mark.parametrize("name", ["empty", "html", "json list", "missing batch_id", "truncated"])
async def test_a_batch_whose_bodies_never_decode_ends_in_error_and_others_go_on(name: str) -> None:
    """Repeated undecodable bodies end that batch with one `error` carrying DecodeError after
    max_decode_failures polls; a batch with good answers still ends `done`."""
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(200, BAD_BODIES[name]))
        server.on("GET", _path(OTHER_ID), Reply(200, _body("completed", OTHER_ID)))
        options = {**FAST, "strategy": "per_id", "max_decode_failures": 3}
        async with client.watch([BATCH_ID, OTHER_ID], **options) as watcher:
            events = [e async for e in watcher]
    bad = [e for e in events if e.batch_id == BATCH_ID]
    assert [e.kind for e in bad] == [EventKind.ERROR]
    assert isinstance(bad[0].error, DecodeError)
    assert len(server.seen("GET", _path())) == 3
    assert [e.kind for e in events if e.batch_id == OTHER_ID] == [EventKind.DONE]


async def test_one_bad_body_between_good_ones_is_retried_silently() -> None:
    """A single undecodable answer produces no event: the next poll carries on."""
    async with connected() as (server, client):
        server.on(
            "GET",
            _path(),
            Reply(200, _body("processing")),
            Reply(200, BAD_BODIES["truncated"]),
            Reply(200, _body("completed")),
        )
        async with client.watch([BATCH_ID], **FAST) as watcher:
            kinds = [e.kind async for e in watcher]
    assert kinds == [EventKind.SEEN, EventKind.DONE]


async def test_unknown_status_and_fields_are_tolerated_by_the_watcher() -> None:
    """A status a newer API invented is reported (`status`) and kept open; unknown fields are
    ignored; the batch is still followed to `done`."""
    novel = _body("processing", status="paused_for_review", region="eu", extra={"a": [1]})
    async with connected() as (server, client):
        server.on(
            "GET",
            _path(),
            Reply(200, _body("processing")),
            Reply(200, novel),
            Reply(200, _body("completed", shard=7)),
        )
        async with client.watch([BATCH_ID], **FAST) as watcher:
            events = [e async for e in watcher]
    assert [(e.kind, e.batch.status if e.batch else None) for e in events] == [
        (EventKind.SEEN, "processing"),
        (EventKind.STATUS, "paused_for_review"),
        (EventKind.DONE, "completed"),
    ]


# -- Retry-After on the watcher -------------------------------------------------------------


def _rate_limited_once(retry_after: str, times: list[float]) -> Callable[[Seen], Reply]:
    def reply(seen: Seen) -> Reply:
        times.append(anyio.current_time())
        if len(times) == 1:
            return error(429, "too_many_requests", "slow down", **{"Retry-After": retry_after})
        return Reply(200, _body("completed"))

    return reply


@pytest.mark.parametrize(
    ("retry_after", "least", "most"),
    [
        ("-5", 0.0, 10.0),  # negative: no wait named, the watcher retries on its own schedule
        ("Mon, 20 Jul 2020 10:00:00 GMT", 0.0, 10.0),  # a date in the past: the same
        ("soon", 1.0, 60.0),  # garbage: ignored, a default pause applies
        ("12", 12.0, 13.0),  # sane: honoured to the second
    ],
)
async def test_odd_retry_after_values_on_the_watcher(
    retry_after: str, least: float, most: float
) -> None:
    """A 429 whose Retry-After is negative, past, garbage or sane pauses the watcher for a
    bounded time, then the batch is polled again and ends `done`."""
    times: list[float] = []
    async with connected() as (server, client):
        server.on("GET", _path(), _rate_limited_once(retry_after, times))
        async with client.watch([BATCH_ID], **FAST) as watcher:
            kinds = [e.kind async for e in watcher]
        assert watcher.statistics().rate_limited == 1
    assert kinds == [EventKind.DONE]
    assert least <= times[1] - times[0] <= most


async def test_a_huge_retry_after_is_cut_short_by_the_deadline() -> None:
    """A 429 asking for 10**12 s does not outlive the watcher's deadline: the batch gets an
    `error` with WaitTimeoutError when the deadline passes, and nothing is polled meanwhile."""
    times: list[float] = []
    async with connected() as (server, client):
        server.on("GET", _path(), _rate_limited_once("1000000000000", times))
        started = anyio.current_time()
        async with client.watch([BATCH_ID], timeout=300.0, **FAST) as watcher:
            events = [e async for e in watcher]
    assert anyio.current_time() - started == pytest.approx(300.0, abs=1.0)
    assert [e.kind for e in events] == [EventKind.ERROR]
    assert isinstance(events[0].error, WaitTimeoutError)
    assert len(times) == 1


# -- list pages that lie, on the watcher's sweep ------------------------------------------------


def _lying_page(body: dict[str, Any]) -> Callable[[Seen], Reply]:
    return lambda seen: Reply(200, body)


@pytest.mark.parametrize(
    "page",
    [
        {"data": [], "page_info": {"page": 1, "total_page": 9, "total_results": 400}},
        {"data": [], "page_info": {"page": 7, "total_page": 1}},
        {"data": [], "page_info": {"page": "one", "total_page": -1}},
        {"page_info": {"page": 1}},
    ],
    ids=["overstates", "wrong page", "wrong types", "no data"],
)
async def test_a_sweep_whose_pages_lie_still_ends_every_batch(page: dict[str, Any]) -> None:
    """When the list sweep omits the batches, or its body breaks the schema, each watched batch
    is still polled by ID and ends `done`: a lying list never hides an ending."""
    ids = [f"{n:024x}" for n in range(1, 5)]
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", _lying_page(page))
        for batch_id in ids:
            server.on("GET", _path(batch_id), Reply(200, _body("completed", batch_id)))
        async with client.watch(ids, strategy="sweep", **FAST) as watcher:
            events = [e async for e in watcher]
    assert sorted(e.batch_id for e in events if e.kind is EventKind.DONE) == ids
    assert len(events) == len(ids)


async def test_a_sweep_that_repeats_batches_across_pages_reports_each_change_once() -> None:
    """Pages that overlap (the list shifted between requests) give each batch's change once."""
    ids = [f"{n:024x}" for n in range(1, 4)]
    running = [_body("processing", b) for b in ids]
    pages = {
        "1": {"data": running[:2], "page_info": {"page": 1, "total_page": 2}},
        "2": {"data": running[1:], "page_info": {"page": 2, "total_page": 2}},
    }

    def listing(seen: Seen) -> Reply:
        return Reply(200, pages[dict(seen.query)["page"]])

    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", listing)
        for batch_id in ids:
            server.on("GET", _path(batch_id), Reply(200, _body("processing", batch_id)))
        async with client.watch(ids, strategy="sweep", timeout=30.0, **FAST) as watcher:
            events: list[Event] = [e async for e in watcher]
    seen = [e.batch_id for e in events if e.kind is EventKind.SEEN]
    assert sorted(seen) == ids


async def test_a_missing_batch_is_gone_not_retried() -> None:
    """A well-formed ID the API does not know ends `gone` (NotFoundError) after one request."""
    async with connected() as (server, client):
        server.on("GET", _path(), error(404, "not_found", "no such batch"))
        async with client.watch([BATCH_ID], **FAST) as watcher:
            events = [e async for e in watcher]
    assert [e.kind for e in events] == [EventKind.GONE]
    assert isinstance(events[0].error, NotFoundError)
    assert len(server.requests) == 1


async def test_create_response_missing_items_still_decodes() -> None:
    """A 201 without the optional items list decodes (items empty) rather than failing a create
    that did happen, which a retry would then repeat."""
    body = {k: v for k, v in CREATE_RESPONSE.items() if k != "items"}
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", Reply(201, body))
        created = await client.batches.create(
            [{"video": {"type": "asset_id", "asset_id": "a"}}],
            defaults={"prompt": {"input_text": "x"}},
        )
    assert created.items == ()
