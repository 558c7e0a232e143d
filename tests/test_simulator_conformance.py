"""Conformance: the vendor's own SDK runs against the simulator, and every body fits the spec.

The official ``twelvelabs`` SDK (async client, httpx) drives every batch method
against the simulator; its models accept unknown fields, so each raw body is
also checked against the published OpenAPI schemas with a small validator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from twelvelabs import (
    AsyncTwelveLabs,
    BatchDefaults,
    BatchItemRequest,
    BatchPrompt,
    BatchVideoContext,
)
from twelvelabs.errors import BadRequestError, ConflictError, NotFoundError, TooManyRequestsError

from asyncbatch.testing import ManualClock, Simulator

pytestmark = pytest.mark.anyio

KEY = "sdk-test-key"
# TwelveLabs' own OpenAPI spec, kept beside the tests so that they are self-contained.
SPEC_PATH = Path(__file__).parent / "data" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())


@pytest.fixture(autouse=True)
def _no_base_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK lets $TWELVELABS_BASE_URL beat an explicit base_url.
    monkeypatch.delenv("TWELVELABS_BASE_URL", raising=False)


@asynccontextmanager
async def sdk(**options: Any) -> AsyncIterator[tuple[Simulator, ManualClock, Any]]:
    """A simulator on a ManualClock and the official async SDK pointed at it."""
    clock = ManualClock()
    async with (
        Simulator(api_key=KEY, clock=clock, **options) as sim,
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = AsyncTwelveLabs(api_key=KEY, base_url=sim.base_url, httpx_client=http)
        yield sim, clock, client.analyze_async.batches


def _sdk_requests(n: int) -> list[Any]:
    return [
        BatchItemRequest(
            video=BatchVideoContext(type="asset_id", asset_id=f"asset{i}"), custom_id=f"s-{i}"
        )
        for i in range(n)
    ]


DEFAULTS = BatchDefaults(prompt=BatchPrompt(input_text="Summarise the video."))


async def test_the_sdk_follows_a_batch_from_create_to_delete() -> None:
    """SDK create, retrieve until completed, results (one per item), list and delete all parse."""
    async with sdk(item_seconds=10, item_failure_rate=0.4, seed=9) as (sim, clock, batches):
        created = await batches.create(
            model_name="pegasus1.5",
            analysis_mode="general",
            defaults=DEFAULTS,
            requests=_sdk_requests(6),
        )
        assert created.status == "pending"
        assert len(created.items) == 6
        statuses = []
        while True:
            batch = await batches.retrieve(created.batch_id)
            statuses.append(batch.status)
            if batch.status == "completed":
                break
            clock.advance(3)
        assert statuses[0] == "pending"
        assert "processing" in statuses
        assert batch.completed_at is not None
        items = [item async for item in batches.results(created.batch_id)]
        assert len(items) == 6
        assert sum(item.status == "failed" for item in items) == batch.failed_items
        listed = [b.batch_id async for b in await batches.list(page_limit=5)]
        assert listed == [created.batch_id]
        assert await batches.delete(created.batch_id) is None
        assert sim.batch_ids() == []


async def test_the_sdk_parses_results_in_every_item_status() -> None:
    """Mid-cancel results mix queued, processing, ready and canceled lines; the SDK keeps all."""
    async with sdk(item_seconds=10, items_at_once=2, pending_seconds=1) as (sim, clock, batches):
        batch_id = sim.create_batch(8)["batch_id"]
        clock.advance(1)
        before = [item.status async for item in batches.results(batch_id)]
        clock.advance(20)
        canceled = await batches.cancel(batch_id)
        after = [item.status async for item in batches.results(batch_id)]
    assert {"queued", "processing"} <= set(before)
    assert len(before) == len(after) == 8
    assert canceled.status == "canceling"
    assert {"ready", "processing", "canceled"} <= set(after)


async def test_the_sdk_pager_walks_every_page_and_stops() -> None:
    """The SDK pager, which asks until a page is empty, ends after the last page."""
    async with sdk(max_active=50) as (sim, clock, batches):
        for _ in range(12):
            sim.create_batch(1)
            clock.advance(1)
        pager = await batches.list(page_limit=5, status=["pending", "processing", "completed"])
        listed = [b.batch_id async for b in pager]
        stats = sim.stats
    assert listed == sim.batch_ids()
    assert len(listed) == 12
    assert stats.requests["list"] == 4  # three pages and the SDK's extra empty one


async def test_the_sdk_raises_its_typed_errors() -> None:
    """404, 409 (cancel, delete), 429 (sixth batch) and 400 reach the SDK as its error classes."""
    async with sdk(item_seconds=10**5) as (sim, _, batches):
        with pytest.raises(NotFoundError):
            await batches.retrieve("0123456789abcdef01234567")
        running = sim.create_batch(1)["batch_id"]
        with pytest.raises(ConflictError) as not_terminal:
            await batches.delete(running)
        for _ in range(4):
            sim.create_batch(1)
        with pytest.raises(TooManyRequestsError):
            await batches.create(
                model_name="pegasus1.5",
                analysis_mode="general",
                defaults=DEFAULTS,
                requests=_sdk_requests(1),
            )
        with pytest.raises(BadRequestError):
            await batches.create(
                model_name="pegasus1.5", analysis_mode="general", requests=_sdk_requests(1)
            )
        sim.age_batch(running, 86_400)
        with pytest.raises(ConflictError) as expired:
            await batches.cancel(running)
    assert not_terminal.value.body["error"]["code"] == "batch_not_terminal"
    assert expired.value.body["error"]["code"] == "batch_expired"


# -- every raw body against the OpenAPI schemas ----------------------------------


def check_schema(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Assert ``value`` fits ``schema``: the JSON Schema subset the batch schemas use."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        check_schema(value, SPEC["components"]["schemas"][name], where)
        return
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        assert any(_is_type(value, t) for t in allowed), f"{where}: {value!r} is not {allowed}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if schema.get("format") == "date-time" and isinstance(value, str):
        assert datetime.fromisoformat(value).tzinfo is not None, f"{where}: {value!r}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            assert key in value, f"{where}: missing required {key!r}"
        properties = schema.get("properties", {})
        for key, item in value.items():
            assert key in properties, f"{where}: {key!r} is not in the schema"
            check_schema(item, properties[key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check_schema(item, schema["items"], f"{where}[{index}]")


def _is_type(value: Any, name: str) -> bool:
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return bool(checks[name](value))


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The schema the spec declares for one answer of one operation."""
    response = SPEC["paths"][path][method]["responses"][str(status)]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def create_body(named: int, anonymous: int = 1) -> dict[str, Any]:
    """A valid create body: ``named`` requests with a custom_id, ``anonymous`` without."""
    requests: list[dict[str, Any]] = [
        {"video": {"type": "asset_id", "asset_id": f"a{i}"}, "custom_id": f"c{i}"}
        for i in range(named)
    ]
    requests += [{"video": {"type": "asset_id", "asset_id": "anon"}}] * anonymous
    return {
        "model_name": "pegasus1.5",
        "analysis_mode": "general",
        "defaults": {"prompt": {"input_text": "Summarise."}},
        "requests": requests,
    }


ONE = "/analyze/batches/{batch_id}"


async def test_every_success_body_fits_the_spec() -> None:
    """Create, retrieve in every status, list, cancel and results lines all fit their schemas."""
    clock = ManualClock()
    async with (
        Simulator(
            api_key=KEY,
            clock=clock,
            expire_after=60,
            item_seconds=30,
            items_at_once=4,
            item_failure_rate=0.5,
            seed=1,
        ) as sim,
        aiohttp.ClientSession(headers={"x-api-key": KEY}) as session,
    ):
        url = f"{sim.base_url}/analyze/batches"
        async with session.post(url, json=create_body(8, 2)) as response:
            created = await response.json()
        check_schema(created, response_schema("/analyze/batches", "post", 201))
        bodies, lines = [], []
        for step in range(8):
            async with session.get(f"{url}/{created['batch_id']}") as response:
                bodies.append(await response.json())
            async with session.get(f"{url}/{created['batch_id']}/results") as response:
                lines += [json.loads(line) for line in (await response.text()).splitlines()]
            if step == 1:
                other = sim.create_batch(4)["batch_id"]
                async with session.post(f"{url}/{other}/cancel") as response:
                    bodies.append(await response.json())
                    assert response.status == 202
            clock.advance(10)
        async with session.get(url, params={"page_limit": 50}) as response:
            listed = await response.json()
            bodies += listed["data"]
            bodies.append(sim.batch(other))
    check_schema(listed, response_schema("/analyze/batches", "get", 200))
    for body in bodies:
        check_schema(body, response_schema(ONE, "get", 200))
    for line in lines:
        check_schema(line, response_schema(ONE + "/results", "get", 200))
    statuses = {b["status"] for b in bodies}
    assert statuses == {"pending", "processing", "canceling", "canceled", "expired"}
    assert {line["status"] for line in lines} == {
        "queued",
        "processing",
        "ready",
        "failed",
        "canceled",
    }


async def test_completed_bodies_fit_the_spec() -> None:
    """A completed batch and its list entry fit the status schema."""
    clock = ManualClock()
    async with Simulator(api_key=KEY, clock=clock) as sim:
        batch_id = sim.create_batch(3)["batch_id"]
        clock.advance(3600)
        body = sim.batch(batch_id)
    assert body["status"] == "completed"
    check_schema(body, response_schema(ONE, "get", 200))


async def test_every_documented_error_body_fits_error_response() -> None:
    """The 400, 404, 409 and 429 bodies fit the spec's ErrorResponse for their operation."""
    clock = ManualClock()
    async with (
        Simulator(api_key=KEY, clock=clock, item_seconds=10**5) as sim,
        aiohttp.ClientSession(headers={"x-api-key": KEY}) as session,
    ):
        url = f"{sim.base_url}/analyze/batches"
        running = sim.create_batch(1)["batch_id"]
        cases: list[tuple[str, str, str, dict[str, Any], int]] = [
            ("/analyze/batches", "post", url, {"json": {"model_name": "x"}}, 400),
            ("/analyze/batches", "get", url, {"params": {"page_limit": 99}}, 400),
            (ONE, "get", f"{url}/0123456789abcdef01234567", {}, 404),
            (ONE, "delete", f"{url}/{running}", {}, 409),
        ]
        for _ in range(4):
            sim.create_batch(1)
        cases.append(("/analyze/batches", "post", url, {"json": create_body(1)}, 429))
        for path, method, target, kwargs, status in cases:
            async with session.request(method, target, **kwargs) as response:
                assert response.status == status
                check_schema(await response.json(), response_schema(path, method, status))
        sim.age_batch(running, 86_400)
        async with session.post(f"{url}/{running}/cancel") as response:
            assert response.status == 409
            check_schema(await response.json(), response_schema(ONE + "/cancel", "post", 409))
