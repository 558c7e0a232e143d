"""The watcher's promises against a server that lies, stalls or misbehaves.

Each test is named after the promise it proves and plays one misbehaviour
found from outside on a scripted loopback server (`tests._server`), on virtual
time. The model-based chaos test in `tests/test_chaos.py` looks for the rest of
this class.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from asyncbatch import (
    AsyncBatchError,
    DecodeError,
    EndpointNotFoundError,
    Event,
    EventKind,
    MemoryStore,
    PollPolicy,
)
from asyncbatch._events import classify
from asyncbatch._tracker import VERIFY_INTERVALS, Strategy, Tracker
from tests._server import BATCH_ID, COMMON, STATUS_BODIES, Reply, Seen, connected, error
from tests._snapshots import snapshot

pytestmark = pytest.mark.anyio

OTHER_ID = "0123456789abcdef01234567"
THIRD_ID = "fedcba9876543210fedcba98"
FAST: dict[str, Any] = {"min_interval": 1.0, "max_interval": 10.0, "seed": 5}
LIST = "/analyze/batches"


def _path(batch_id: str = BATCH_ID) -> str:
    return f"/analyze/batches/{batch_id}"


def _body(status: str, batch_id: str = BATCH_ID, **changes: Any) -> dict[str, Any]:
    return {**STATUS_BODIES[status], "batch_id": batch_id, **changes}


def _page(*batches: dict[str, Any], total_page: int = 1, page: int = 1) -> dict[str, Any]:
    info = {"limit_per_page": 50, "page": page, "total_page": total_page, "total_results": 1}
    return {"data": list(batches), "page_info": info}


async def _events(client: Any, ids: list[str], **options: Any) -> list[Event]:
    async with client.watch(ids, **{**FAST, **options}) as watcher:
        return [event async for event in watcher]


# -- a body must be the batch that was asked for ------------------------------------------


async def test_retrieve_refuses_another_batchs_object() -> None:
    """GET /analyze/batches/A answering batch B's object is a DecodeError, never B as A."""
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(body=_body("completed", OTHER_ID)))
        with pytest.raises(DecodeError, match=OTHER_ID):
            await client.batches.retrieve(BATCH_ID)


async def test_retrieve_accepts_its_own_id_in_the_other_case() -> None:
    """An ID is hex digits: a server that answers it lower-cased answered the batch asked for."""
    async with connected() as (server, client):
        server.on("GET", _path(BATCH_ID.upper()), Reply(body=_body("completed")))
        batch = await client.batches.retrieve(BATCH_ID.upper())
    assert batch.batch_id == BATCH_ID


async def test_cancel_refuses_another_batchs_object() -> None:
    """POST .../A/cancel answering batch B's object is a DecodeError too."""
    async with connected() as (server, client):
        server.on("POST", _path() + "/cancel", Reply(202, _body("canceling", OTHER_ID)))
        with pytest.raises(DecodeError, match=OTHER_ID):
            await client.batches.cancel(BATCH_ID)


async def test_watcher_never_reports_another_batchs_end_as_its_own() -> None:
    """A batch answered by another batch's `completed` object keeps polling and ends with its
    own state; the foreign snapshot is never delivered."""
    async with connected() as (server, client):
        server.on(
            "GET",
            _path(),
            Reply(body=_body("completed", OTHER_ID)),
            Reply(body=_body("completed", OTHER_ID)),
            Reply(body=_body("canceled")),
        )
        events = await _events(client, [BATCH_ID])
    assert [e.kind for e in events] == [EventKind.DONE]
    assert events[0].batch is not None
    assert (events[0].batch.batch_id, events[0].batch.status) == (BATCH_ID, "canceled")


async def test_wait_raises_rather_than_returning_another_batch() -> None:
    """`wait(A)` on a server that only ever answers B's object ends in a typed error."""
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(body=_body("completed", OTHER_ID)))
        with pytest.raises(DecodeError, match=OTHER_ID):
            await client.batches.wait(BATCH_ID, **FAST, max_decode_failures=3)


# -- counters and statuses that cannot be true ------------------------------------------------


def test_counter_glitch_above_the_total_does_not_hide_the_end() -> None:
    """A snapshot whose counters exceed total_items never becomes a baseline that makes the
    real `completed` look stale."""
    t = Tracker(PollPolicy(stagger=0.0), strategy=Strategy.PER_ID)
    t.add(BATCH_ID, 0.0)
    t.due(0.0)
    t.observed(BATCH_ID, snapshot("processing", queued=2, processing=2), 0.0)
    glitch = snapshot("processing", ready=400, queued=2)
    glitch = type(glitch)(**{**_fields(glitch), "total_items": 4})
    assert t.observed(BATCH_ID, glitch, 10.0) == []
    (event,) = t.observed(BATCH_ID, snapshot("completed", ready=3, failed=1), 20.0)
    assert event.kind is EventKind.DONE


def test_an_implausible_baseline_never_makes_later_snapshots_stale() -> None:
    """Even as the first snapshot, impossible counters do not hide later progress or the end."""
    first = snapshot("processing", ready=9)
    first = type(first)(**{**_fields(first), "total_items": 4})
    assert classify(first, snapshot("processing", ready=1, queued=3)) is EventKind.PROGRESS
    assert classify(first, snapshot("completed", ready=4)) is EventKind.DONE


def test_terminal_snapshot_ends_the_batch_whatever_its_counters() -> None:
    """A `completed` answer with fewer finished items than a glitchy earlier read still ends
    the batch: terminal wins over counters."""
    high = snapshot("canceling", ready=3, canceled=1)
    assert classify(high, snapshot("canceled", ready=1, canceled=1)) is EventKind.DONE


def test_status_never_goes_back_through_an_unknown_status() -> None:
    """processing -> a status we do not know -> pending is one `status` event, not two: the
    pending read is stale against the highest status seen."""
    t = Tracker(PollPolicy(stagger=0.0), strategy=Strategy.PER_ID)
    t.add(BATCH_ID, 0.0)
    kinds = []
    for now, shot in enumerate(
        [
            snapshot("processing", queued=1, processing=1),
            snapshot("finalizing", queued=1, processing=1),
            snapshot("pending", queued=2),
            snapshot("completed", ready=2),
        ]
    ):
        t.due(float(now * 100))
        kinds += [e.kind for e in t.observed(BATCH_ID, shot, float(now * 100))]
    assert kinds == [EventKind.SEEN, EventKind.STATUS, EventKind.DONE]


async def test_negative_counters_decode_and_completed_still_ends_the_batch() -> None:
    """The spec types counters as plain integers: a negative one decodes, and a `completed`
    batch carrying it still reaches `done`."""
    async with connected() as (server, client):
        server.on(
            "GET",
            _path(),
            Reply(body=_body("processing", queued_items=-1)),
            Reply(body=_body("completed", canceled_items=-2)),
        )
        events = await _events(client, [BATCH_ID])
    assert [e.kind for e in events] == [EventKind.SEEN, EventKind.DONE]
    assert events[-1].batch is not None
    assert events[-1].batch.canceled_items == -2


def _fields(batch: Any) -> dict[str, Any]:
    return {name: getattr(batch, name) for name in batch.__struct_fields__}


# -- the list sweep is an optimisation, never the only source of truth -------------------------


async def test_stale_list_cannot_hide_a_finished_batch() -> None:
    """A list that keeps showing a finished batch as `processing` cannot postpone its own GET
    past VERIFY_INTERVALS max_intervals: the batch ends `done` in bounded time."""
    async with connected() as (server, client):
        server.on(
            "GET", LIST, Reply(body=_page(_body("processing"), _body("processing", OTHER_ID)))
        )
        server.on("GET", _path(), Reply(body=_body("completed")))
        server.on("GET", _path(OTHER_ID), Reply(body=_body("processing", OTHER_ID)))
        started = anyio.current_time()
        async with client.watch([BATCH_ID, OTHER_ID], strategy="sweep", **FAST) as watcher:
            async for event in watcher:
                if event.batch_id == BATCH_ID and event.is_final:
                    break
        took = anyio.current_time() - started
    assert event.kind is EventKind.DONE
    assert took <= (VERIFY_INTERVALS + 2) * FAST["max_interval"], took


@pytest.mark.parametrize(
    "answer",
    [
        error(400, "parameter_invalid"),
        error(404, "resource_not_exist"),
        error(422, "unprocessable"),
        Reply(302, b"", headers={"Location": "http://127.0.0.1:1/elsewhere"}),
        Reply(404, b"404: Not Found"),
    ],
    ids=["400", "404-json", "422", "redirect", "404-plain"],
)
async def test_a_failing_list_falls_back_to_per_id_polls(answer: Reply) -> None:
    """Any non-auth failure of the list endpoint leaves every batch to its own GETs, which end
    it correctly; no batch gets `error` because the sweep failed."""
    async with connected() as (server, client):
        server.on("GET", LIST, answer)
        server.on("GET", _path(), Reply(body=_body("processing")), Reply(body=_body("completed")))
        server.on(
            "GET",
            _path(OTHER_ID),
            Reply(body=_body("pending", OTHER_ID)),
            Reply(body=_body("expired", OTHER_ID)),
        )
        for strategy in ("auto", "sweep"):
            events = await _events(client, [BATCH_ID, OTHER_ID], strategy=strategy)
            finals = {e.batch_id: e for e in events if e.is_final}
            assert {b: e.kind for b, e in finals.items()} == {
                BATCH_ID: EventKind.DONE,
                OTHER_ID: EventKind.DONE,
            }
    assert server.seen("GET", LIST)


async def test_only_an_auth_failure_of_the_list_ends_every_batch() -> None:
    """401 from the list is the key's fault, so it ends every open batch with `error`."""
    async with connected() as (server, client):
        server.on("GET", LIST, error(401, "api_key_invalid"))
        server.on("GET", _path(), Reply(body=_body("processing")))
        server.on("GET", _path(OTHER_ID), Reply(body=_body("processing", OTHER_ID)))
        events = await _events(client, [BATCH_ID, OTHER_ID], strategy="sweep", stagger=0.0)
    assert sorted((e.batch_id, e.kind) for e in events if e.is_final) == [
        (OTHER_ID, EventKind.ERROR),
        (BATCH_ID, EventKind.ERROR),
    ]


def _slow_list(delay: float) -> Callable[[Seen], Reply]:
    def answer(_: Seen) -> Reply:
        return Reply(body=_page(_body("processing"), _body("processing", OTHER_ID)), delay=delay)

    return answer


async def test_a_slow_sweep_causes_no_request_storm() -> None:
    """While a list sweep is held up for several max_intervals, the batches' own GETs stay on
    their schedule: a bounded number per simulated minute, never back to back."""
    async with connected() as (server, client):
        server.on("GET", LIST, _slow_list(delay=5 * FAST["max_interval"]))
        server.on("GET", _path(), Reply(body=_body("processing")))
        server.on("GET", _path(OTHER_ID), Reply(body=_body("processing", OTHER_ID)))
        async with client.watch(
            [BATCH_ID, OTHER_ID], strategy="sweep", timeout=300.0, **FAST
        ) as watcher:
            _ = [event async for event in watcher]
    gets = len(server.seen("GET", _path())) + len(server.seen("GET", _path(OTHER_ID)))
    # Each batch at most once per min_interval over the 300 s; a storm is thousands.
    assert gets <= 2 * 300 / FAST["min_interval"], gets


def _endless(seen: Seen) -> Reply:
    page = int(dict(seen.query)["page"])
    fresh = [_body("processing", f"{page:012x}{i:012x}", total_items=4) for i in range(50)]
    return Reply(body=_page(*fresh, total_page=10**9, page=page))


async def test_endless_pagination_is_capped_per_sweep_and_on_entry() -> None:
    """A list whose pages never run out neither keeps `watch_active` from entering nor makes
    a sweep read forever; memory stays small."""
    async with connected() as (server, client):
        server.on("GET", LIST, _endless)
        server.on("GET", _path(), Reply(body=_body("completed")))
        server.on("GET", _path(OTHER_ID), Reply(body=_body("completed", OTHER_ID)))
        tracemalloc.start()
        try:
            async with client.watch(
                [BATCH_ID, OTHER_ID], watch_active=True, stop_when_done=False, **FAST
            ) as watcher:
                entry_pages = len(server.seen("GET", LIST))
                assert watcher.statistics().tracked <= 4 * 50 + 2
                with anyio.move_on_after(60.0):
                    async for _ in watcher:
                        pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert entry_pages <= 4
    sweeps = watcher.statistics().sweeps
    assert len(server.seen("GET", LIST)) <= entry_pages + 4 * max(1, sweeps)
    assert peak < 64 * 1024 * 1024, peak


# -- what the server sends is never the caller's mistake ----------------------------------


async def test_a_malformed_id_in_the_active_list_is_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`watch_active` skips a listed batch whose ID is not 24 hex digits, with a log line,
    and watches the healthy ones to their end."""
    async with connected() as (server, client):
        bad = _body("processing", "not-a-batch-id")
        server.on("GET", LIST, Reply(body=_page(bad, _body("processing"))))
        server.on("GET", _path(), Reply(body=_body("completed")))
        with caplog.at_level(logging.WARNING, logger="asyncbatch"):
            events = await _events(client, [], watch_active=True, strategy="per_id")
    assert [(e.batch_id, e.kind) for e in events] == [(BATCH_ID, EventKind.DONE)]
    assert "not-a-batch-id" in caplog.text


async def test_create_and_wait_with_a_malformed_created_id_is_a_typed_server_error() -> None:
    """A create response whose batch_id is not 24 hex digits raises an AsyncBatchError that
    shows the ID (the batch exists), never a caller-mistake ValueError."""
    async with connected() as (server, client):
        created = {
            "batch_id": "../../x",
            "status": "pending",
            "total_items": 1,
            "created_at": COMMON["created_at"],
            "expires_at": COMMON["expires_at"],
        }
        server.on("POST", LIST, Reply(201, created))
        with pytest.raises(DecodeError, match=r"\.\./\.\./x") as caught:
            await client.batches.create_and_wait(
                [{"video": {"type": "asset_id", "asset_id": "6298d673f1090f1100476d4c"}}],
                defaults={"prompt": {"input_text": "Summarise."}},
            )
    assert isinstance(caught.value, AsyncBatchError)
    assert not isinstance(caught.value, ValueError)


# -- a wrong base URL is not a deleted batch ---------------------------------------------------


async def test_a_bare_404_is_a_wrong_base_url_never_gone() -> None:
    """A plain-text 404 (what any path answers under a base URL without /v1.3) gives the
    batch an `error` naming the base URL, never `gone`, and a store keeps the batch open."""
    store = MemoryStore()
    async with connected() as (server, client):
        server.on("GET", _path(), Reply(404, b"404: Not Found"))
        events = await _events(client, [BATCH_ID], state=store)
        with pytest.raises(EndpointNotFoundError, match="base URL"):
            await client.batches.retrieve(BATCH_ID)
    (event,) = events
    assert event.kind is EventKind.ERROR
    assert isinstance(event.error, EndpointNotFoundError)
    assert "base URL" in str(event.error)
    (record,) = await store.load()
    assert not record.final  # a later watch with the right URL picks the batch up


async def test_the_apis_own_404_is_still_gone() -> None:
    """The API's JSON 404 keeps meaning what it says: the batch does not exist."""
    async with connected() as (server, client):
        server.on("GET", _path(), error(404, "resource_not_exist", "Batch not found"))
        (event,) = await _events(client, [BATCH_ID])
    assert event.kind is EventKind.GONE


# -- 429s: a floor on every pause ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "0"},
        {"Retry-After": "-30"},
        {"Retry-After": "Mon, 20 Jul 2020 10:00:00 GMT"},
        {"retry-after-ms": "0"},
        {},
    ],
    ids=["zero", "negative", "past-date", "zero-ms", "absent"],
)
async def test_retry_after_zero_or_past_does_not_hammer_the_server(
    headers: dict[str, str],
) -> None:
    """A server that answers every request 429 with no real wait gets a few requests a
    minute at most, backing off to max_interval, not thousands a second."""
    times: list[float] = []
    async with connected() as (server, client):
        for batch_id in (BATCH_ID, OTHER_ID):
            server.on("GET", _path(batch_id), _timed(error(429, "rate_limited", **headers), times))
        events = await _events(client, [BATCH_ID, OTHER_ID], timeout=600.0, strategy="per_id")
    assert {e.kind for e in events} == {EventKind.ERROR}  # the time limit, nothing else
    per_minute = Counter(int(t // 60) for t in times)
    assert max(per_minute.values()) <= 2 * 60 / FAST["min_interval"], per_minute
    # Once the floor reaches max_interval: each batch once per max_interval, as when idle.
    assert len(times) <= 2 * (600 / FAST["max_interval"] + 5), len(times)


def _timed(reply: Reply, times: list[float]) -> Callable[[Seen], Reply]:
    def answer(_: Seen) -> Reply:
        times.append(anyio.current_time())
        return reply

    return answer
