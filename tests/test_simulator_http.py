"""The simulator over HTTP: status codes, bodies and error shapes, via our Client and aiohttp."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest

from asyncbatch import (
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
)
from asyncbatch.testing import ManualClock, Simulator, SimulatorConfig, serve

pytestmark = pytest.mark.anyio

KEY = "http-test-key"
HEADERS = {"x-api-key": KEY}
UNKNOWN_ID = "0123456789abcdef01234567"


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[Simulator, ManualClock, Client]]:
    """A simulator on a ManualClock and our Client pointed at it."""
    clock = ManualClock()
    async with (
        Simulator(api_key=KEY, clock=clock, **options) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        yield sim, clock, client


@asynccontextmanager
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, to read exact status codes and bodies."""
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        yield session


def _requests(n: int) -> list[dict[str, Any]]:
    return [
        {"video": {"type": "asset_id", "asset_id": f"a{i}"}, "custom_id": f"r-{i}"}
        for i in range(n)
    ]


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


async def test_base_url_carries_the_api_prefix() -> None:
    """base_url is http://127.0.0.1:PORT/v1.3."""
    async with Simulator(api_key=KEY, clock=ManualClock()) as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1\.3", sim.base_url)
        assert KEY not in repr(sim)


async def test_a_wrong_or_missing_key_is_401_api_key_invalid() -> None:
    """Without the right x-api-key every endpoint answers 401 api_key_invalid (nested)."""
    async with running() as (sim, _, _client), aiohttp.ClientSession() as session:
        url = f"{sim.base_url}/analyze/batches"
        status, body = await _call(session, "GET", url)
        assert status == 401
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message"}
        status, body = await _call(session, "GET", url, headers={"x-api-key": "nope"})
        assert status == 401
        assert body["error"]["code"] == "api_key_invalid"
        status, body = await _call(session, "POST", url + f"/{UNKNOWN_ID}/cancel")
        assert (status, body["error"]["code"]) == (401, "api_key_invalid")


async def test_flat_gateway_errors_option() -> None:
    """gateway_errors="flat" gives the 401 as a flat {code, message} body."""
    async with running(gateway_errors="flat") as (sim, _, _), aiohttp.ClientSession() as session:
        status, body = await _call(session, "GET", f"{sim.base_url}/analyze/batches")
    assert status == 401
    assert body["code"] == "api_key_invalid"
    assert "error" not in body


async def test_our_client_sees_401_as_authentication_error() -> None:
    """asyncbatch.Client with a wrong key raises AuthenticationError."""
    async with (
        Simulator(api_key=KEY, clock=ManualClock()) as sim,
        Client(api_key="wrong-key", base_url=sim.base_url) as client,
    ):
        with pytest.raises(AuthenticationError) as caught:
            await client.batches.retrieve(UNKNOWN_ID)
    assert caught.value.code == "api_key_invalid"


async def test_create_is_201_with_the_documented_body() -> None:
    """POST /analyze/batches answers 201 with batch_id, status, items, created/expires_at."""
    async with running() as (sim, _, _), raw() as session:
        body = {
            "model_name": "pegasus1.5",
            "analysis_mode": "general",
            "defaults": {"prompt": {"input_text": "Summarise."}},
            "requests": _requests(2),
        }
        status, created = await _call(session, "POST", f"{sim.base_url}/analyze/batches", json=body)
    assert status == 201
    assert set(created) == {
        "batch_id",
        "status",
        "total_items",
        "created_at",
        "expires_at",
        "items",
    }
    assert created["status"] == "pending"
    assert [i["custom_id"] for i in created["items"]] == ["r-0", "r-1"]


async def test_create_400s_have_the_nested_error_shape() -> None:
    """A body that is not JSON and a rule-breaking body both answer 400 {"error": {...}}."""
    async with running() as (sim, _, _), raw() as session:
        url = f"{sim.base_url}/analyze/batches"
        bad_json = await _call(session, "POST", url, data=b"{oops")
        duplicate = await _call(
            session,
            "POST",
            url,
            json={
                "model_name": "pegasus1.5",
                "analysis_mode": "general",
                "defaults": {"prompt": {"input_text": "x"}},
                "requests": _requests(1) * 2,
            },
        )
    for status, body in (bad_json, duplicate):
        assert status == 400
        assert set(body["error"]) == {"code", "message"}
    assert "custom_id" in duplicate[1]["error"]["message"]
    assert sim.batch_ids() == []


async def test_the_sixth_active_batch_is_429_through_our_client() -> None:
    """Our client creating a sixth active batch gets RateLimitError (after its retries)."""
    async with running() as (_sim, _, client):
        for _ in range(5):
            await client.batches.create(_requests(1), defaults={"prompt": {"input_text": "x"}})
        with pytest.raises(RateLimitError) as caught:
            await client.batches.create(
                _requests(1),
                defaults={"prompt": {"input_text": "x"}},
                retry=RetryPolicy(max_attempts=1),
            )
    assert caught.value.status == 429


async def test_lifecycle_through_our_client() -> None:
    """create → retrieve as time passes → completed → results → delete → 404, with our Client."""
    async with running(item_seconds=10, item_failure_rate=0.5, seed=5) as (_, clock, client):
        created = await client.batches.create(
            _requests(8), defaults={"prompt": {"input_text": "x"}}
        )
        statuses = []
        for _ in range(40):
            batch = await client.batches.retrieve(created.batch_id)
            statuses.append(batch.status)
            clock.advance(2)
        assert statuses[0] == "pending"
        assert statuses[-1] == "completed"
        assert set(statuses) == {"pending", "processing", "completed"}
        items = [item async for item in client.batches.results(created.batch_id)]
        assert [i.task_id for i in items] == [i.task_id for i in created.items]
        assert sum(i.status == "failed" for i in items) == batch.failed_items
        assert all(i.error is not None for i in items if i.status == "failed")
        await client.batches.delete(created.batch_id)
        with pytest.raises(NotFoundError):
            await client.batches.retrieve(created.batch_id)


async def test_retrieve_of_an_unknown_or_malformed_id_is_404() -> None:
    """An unknown 24-hex ID and a malformed ID both answer 404 with the nested shape."""
    async with running() as (sim, _, _), raw() as session:
        for batch_id in (UNKNOWN_ID, "not-an-id"):
            for method, suffix in (
                ("GET", ""),
                ("DELETE", ""),
                ("GET", "/results"),
                ("POST", "/cancel"),
            ):
                url = f"{sim.base_url}/analyze/batches/{batch_id}{suffix}"
                status, body = await _call(session, method, url)
                assert (status, body["error"]["code"]) == (404, "resource_not_exist")


async def test_cancel_is_202_canceling_and_409_once_terminal() -> None:
    """Cancel answers 202 with status canceling; after the batch is canceled, 409 batch_canceled."""
    async with running(cancel_seconds=1) as (sim, clock, client), raw() as session:
        batch_id = sim.create_batch(3)["batch_id"]
        url = f"{sim.base_url}/analyze/batches/{batch_id}/cancel"
        status, body = await _call(session, "POST", url)
        assert (status, body["status"]) == (202, "canceling")
        clock.advance(1)
        status, body = await _call(session, "POST", url)
        assert status == 409
        assert body == {"error": {"code": "batch_canceled", "message": body["error"]["message"]}}
        with pytest.raises(ConflictError) as caught:
            await client.batches.cancel(batch_id)
        assert caught.value.code == "batch_canceled"


async def test_delete_is_200_empty_and_409_while_running() -> None:
    """DELETE of a running batch is 409 batch_not_terminal; of a finished one, 200 and no body."""
    async with running() as (sim, clock, _), raw() as session:
        batch_id = sim.create_batch(1)["batch_id"]
        url = f"{sim.base_url}/analyze/batches/{batch_id}"
        status, body = await _call(session, "DELETE", url)
        assert (status, body["error"]["code"]) == (409, "batch_not_terminal")
        clock.advance(3600)
        assert await _call(session, "DELETE", url) == (200, None)
        assert (await _call(session, "GET", url))[0] == 404


async def test_results_are_json_lines_one_per_item() -> None:
    """GET .../results is application/jsonl, one newline-ended line per item, in request order."""
    async with running() as (sim, clock, _), raw() as session:
        created = sim.create_batch(4)
        clock.advance(3600)
        url = f"{sim.base_url}/analyze/batches/{created['batch_id']}/results"
        async with session.get(url) as response:
            assert response.status == 200
            assert response.content_type == "application/jsonl"
            text = await response.text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["task_id"] for line in lines] == [i["task_id"] for i in created["items"]]
    assert {line["status"] for line in lines} == {"ready"}


async def test_an_expired_batch_reports_expired_at() -> None:
    """A batch that outlives expires_at is served as expired with expired_at, over HTTP."""
    async with running(item_seconds=10**6, items_at_once=1) as (sim, clock, client):
        batch_id = sim.create_batch(2)["batch_id"]
        clock.advance(86_400)
        batch = await client.batches.retrieve(batch_id)
    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at
    assert batch.canceled_items == 2


async def _fill(sim: Simulator, clock: ManualClock, count: int, mode: str = "general") -> list[str]:
    ids = []
    for _ in range(count):
        ids.append(sim.create_batch(1, analysis_mode=mode)["batch_id"])
        clock.advance(1)
    return ids


async def test_list_is_newest_first_with_page_info() -> None:
    """The list sorts newest first and page_info counts pages; a page past the end is empty."""
    async with running(max_active=100) as (sim, clock, _), raw() as session:
        ids = await _fill(sim, clock, 12)
        url = f"{sim.base_url}/analyze/batches"
        status, first = await _call(session, "GET", url)
        _, third = await _call(session, "GET", url, params={"page": 3, "page_limit": 5})
        _, beyond = await _call(session, "GET", url, params={"page": 4, "page_limit": 5})
    assert status == 200
    assert [b["batch_id"] for b in first["data"]] == ids[::-1][:10]
    assert first["page_info"] == {
        "limit_per_page": 10,
        "page": 1,
        "total_page": 2,
        "total_results": 12,
    }
    assert [b["batch_id"] for b in third["data"]] == ids[1::-1]
    assert beyond["data"] == []
    assert beyond["page_info"]["total_page"] == 3


async def test_list_filters_repeat_and_or_together() -> None:
    """status=a&status=b keeps either; analysis_mode filters the same way; both combine."""
    async with running(max_active=100, pending_seconds=10**5) as (sim, clock, _), raw() as session:
        general = await _fill(sim, clock, 2)
        segments = await _fill(sim, clock, 2, mode="time_based_metadata")
        sim.cancel_batch(general[0])
        url = f"{sim.base_url}/analyze/batches"
        _, pending_or_canceling = await _call(
            session, "GET", url, params=[("status", "pending"), ("status", "canceling")]
        )
        _, canceling = await _call(session, "GET", url, params={"status": "canceling"})
        _, tbm = await _call(session, "GET", url, params={"analysis_mode": "time_based_metadata"})
        _, none = await _call(
            session,
            "GET",
            url,
            params={"status": "canceling", "analysis_mode": "time_based_metadata"},
        )
    assert {b["batch_id"] for b in pending_or_canceling["data"]} == {*general, *segments}
    assert [b["batch_id"] for b in canceling["data"]] == [general[0]]
    assert [b["batch_id"] for b in tbm["data"]] == segments[::-1]
    assert none["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"page_limit": 51},
        {"page_limit": 0},
        {"page": 0},
        {"page": "two"},
        {"status": "failed"},
        {"analysis_mode": "summary"},
    ],
)
async def test_bad_list_queries_are_400(params: dict[str, Any]) -> None:
    """page_limit beyond 1-50, page below 1, a non-number, an unknown filter value: 400."""
    async with running() as (sim, _, _), raw() as session:
        status, body = await _call(session, "GET", f"{sim.base_url}/analyze/batches", params=params)
    assert status == 400
    assert body["error"]["code"] == "parameter_invalid"


async def test_our_client_lists_every_page() -> None:
    """Client.batches.list walks all pages of 23 batches, newest first, without duplicates."""
    async with running(max_active=100) as (sim, clock, client):
        ids = await _fill(sim, clock, 23)
        listed = [b.batch_id async for b in client.batches.list(page_limit=10)]
        stats = sim.stats
    assert listed == ids[::-1]
    assert stats.requests["list"] == 3


async def test_the_default_clock_is_the_event_loop_clock() -> None:
    """With no clock given, batches progress as loop time passes (virtual in this suite)."""
    async with (
        Simulator(api_key=KEY, item_seconds=30) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(2)["batch_id"]
        assert (await client.batches.retrieve(batch_id)).status == "pending"
        await anyio.sleep(3600)
        assert (await client.batches.retrieve(batch_id)).status == "completed"


async def test_serve_runs_until_cancelled() -> None:
    """serve(config) listens, reports readiness with the simulator, and stops when cancelled."""
    config = SimulatorConfig(api_key=KEY, port=0, seed=3, item_seconds=5, time_scale=10.0)
    assert KEY not in repr(config)
    ready: list[Simulator] = []
    async with anyio.create_task_group() as tg:
        started = anyio.Event()

        def on_ready(sim: Simulator) -> None:
            ready.append(sim)
            started.set()

        async def run() -> None:
            await serve(config, ready=on_ready)

        tg.start_soon(run)
        await started.wait()
        (sim,) = ready
        async with Client(api_key=KEY, base_url=sim.base_url) as client:
            batch_id = sim.create_batch(1)["batch_id"]
            await anyio.sleep(10)  # 100 simulated seconds at time_scale 10
            batch = await client.batches.retrieve(batch_id)
        tg.cancel_scope.cancel()
    assert batch.status == "completed"
    with pytest.raises(RuntimeError):
        _ = sim.base_url
