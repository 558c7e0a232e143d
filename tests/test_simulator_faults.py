"""Fault injection: every kind observed over HTTP, aimed at endpoints, counted, reproducible."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest

from asyncbatch import Client, DecodeError, RetryPolicy
from asyncbatch.testing import FaultKind, FaultRule, ManualClock, Simulator

pytestmark = pytest.mark.anyio

KEY = "fault-test-key"
CREATE = {
    "model_name": "pegasus1.5",
    "analysis_mode": "general",
    "defaults": {"prompt": {"input_text": "Summarise."}},
    "requests": [{"video": {"type": "asset_id", "asset_id": "a1"}, "custom_id": "c1"}],
}


@asynccontextmanager
async def faulty(*rules: FaultRule, **options: Any) -> AsyncIterator[tuple[Simulator, str]]:
    """A simulator on a ManualClock with these rules; yields it and the batches URL."""
    async with Simulator(api_key=KEY, clock=ManualClock(), faults=rules, **options) as sim:
        yield sim, f"{sim.base_url}/analyze/batches"


@asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp session with the key."""
    async with aiohttp.ClientSession(headers={"x-api-key": KEY}) as s:
        yield s


def always(kind: str, **options: Any) -> FaultRule:
    """A rule that injects ``kind`` into every request it covers."""
    return FaultRule(rate=1.0, kinds=[kind], **options)


@pytest.mark.parametrize(
    ("kind", "code"),
    [("500", "internal_server_error"), ("503", "service_unavailable"), ("504", "gateway_timeout")],
)
async def test_status_faults_answer_instead_of_the_endpoint(kind: str, code: str) -> None:
    """An injected 500/503/504 has the nested error body, and the create did not happen."""
    async with faulty(always(kind)) as (sim, url), session() as s:
        async with s.post(url, json=CREATE) as response:
            assert response.status == int(kind)
            body = await response.json()
        assert body["error"]["code"] == code
        assert sim.batch_ids() == []
        assert sim.stats.faults == {kind: 1}


async def test_a_502_is_an_html_page() -> None:
    """An injected 502 looks like a proxy's: text/html, not JSON."""
    async with faulty(always("502")) as (_, url), session() as s, s.get(url) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert "Bad Gateway" in await response.text()


@pytest.mark.parametrize("style", ["nested", "flat"])
async def test_a_429_carries_retry_after_and_rate_limit_headers(style: str) -> None:
    """An injected 429 sends Retry-After (1 s by default) and too_many_requests in either shape."""
    async with (
        faulty(always("429"), gateway_errors=style) as (_, url),
        session() as s,
        s.get(url) as response,
    ):
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert response.headers["X-Ratelimit-Remaining"] == "0"
        body = await response.json()
    detail = body if style == "flat" else body["error"]
    assert detail["code"] == "too_many_requests"


async def test_a_long_retry_after_only_when_asked() -> None:
    """retry_after=3600 on the rule gives Retry-After: 3600."""
    async with (
        faulty(always("429", retry_after=3600)) as (_, url),
        session() as s,
        s.get(url) as response,
    ):
        assert response.headers["Retry-After"] == "3600"


async def test_latency_delays_the_answer_on_the_loop_clock() -> None:
    """Latency waits between half and all of `latency` (virtual time), then answers normally."""
    async with faulty(always("latency", latency=30)) as (_, url), session() as s:
        before = anyio.current_time()
        async with s.get(url) as response:
            assert response.status == 200
        waited = anyio.current_time() - before
    assert 15 <= waited <= 30.5


async def test_a_dropped_connection_still_did_the_work() -> None:
    """A dropped create closes the connection unanswered, but the batch exists."""
    async with faulty(always("drop")) as (sim, url), session() as s:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with s.post(url, json=CREATE):
                pass
        assert len(sim.batch_ids()) == 1


async def test_a_truncated_body_is_a_prefix_that_does_not_parse() -> None:
    """A truncated create answer is shorter JSON that no parser accepts."""
    async with faulty(always("truncate")) as (sim, url), session() as s:
        async with s.post(url, json=CREATE) as response:
            assert response.status == 201
            text = await response.text()
        (batch_id,) = sim.batch_ids()
    assert text.startswith('{"batch_id": "' + batch_id[: len(text) - 14])
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_a_malformed_results_line_makes_our_client_raise_with_the_line_number() -> None:
    """A malformed results body has one bad line after the first; our client names line 2."""
    rule = always("malformed", endpoints=["results"])
    async with faulty(rule) as (sim, _), Client(api_key=KEY, base_url=sim.base_url) as client:
        batch_id = sim.create_batch(3)["batch_id"]
        received = []
        with pytest.raises(DecodeError) as caught:  # noqa: PT012 - raised mid-stream
            async with client.batches.results(batch_id) as items:
                async for item in items:
                    received.append(item.custom_id)
    assert caught.value.line_number == 2
    assert received == ["item-0"]


async def test_a_malformed_json_body_is_not_json() -> None:
    """A malformed list answer is an HTML page served with status 200."""
    async with faulty(always("malformed")) as (_, url), session() as s, s.get(url) as response:
        assert response.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(await response.text())


async def test_a_stale_read_serves_the_previous_snapshot() -> None:
    """After the batch moved on, a stale list read still shows the snapshot served before."""
    clock = ManualClock()
    rule = always("stale", endpoints=["list"])
    async with (
        Simulator(api_key=KEY, clock=clock, faults=[rule]) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(2)["batch_id"]
        assert (await client.batches.retrieve(batch_id)).status == "pending"
        clock.advance(3600)
        assert (await client.batches.retrieve(batch_id)).status == "completed"
        (listed,) = [b async for b in client.batches.list()]
    assert listed.status == "pending"


async def test_faults_aimed_at_one_endpoint_spare_the_others() -> None:
    """A rule on results never touches list; the stats count requests and faults apart."""
    async with faulty(always("500", endpoints=["results"])) as (sim, url), session() as s:
        batch_id = sim.create_batch(1)["batch_id"]
        for _ in range(5):
            async with s.get(url) as response:
                assert response.status == 200
        async with s.get(f"{url}/{batch_id}/results") as response:
            assert response.status == 500
        stats = sim.stats
    assert stats.requests == {"list": 5, "results": 1}
    assert stats.faults == {"500": 1}
    assert stats.total_requests == 6
    assert stats.open_connections >= 1


async def test_a_plain_fault_rate_shows_every_kind_with_short_waits() -> None:
    """fault_rate alone injects all kinds on list, Retry-After at most 2 s, latency at most 1 s."""
    async with faulty(fault_rate=1.0, seed=4) as (sim, url), session() as s:
        retry_afters = set()
        started = anyio.current_time()
        for _ in range(150):
            try:
                async with s.get(url) as response:
                    await response.read()
                    if response.status == 429:
                        retry_afters.add(int(response.headers["Retry-After"]))
            except aiohttp.ServerDisconnectedError:
                continue
        elapsed = anyio.current_time() - started
        stats = sim.stats
    assert set(stats.faults) == {str(kind) for kind in FaultKind}
    # aiohttp resends a GET once when a reused connection drops, hence >= 150
    assert sum(stats.faults.values()) == stats.requests["list"] >= 150
    assert retry_afters
    assert max(retry_afters) <= 2
    assert elapsed <= stats.faults["latency"] * 1.0 + 1


async def test_the_same_seed_gives_the_same_faults() -> None:
    """Two simulators with one seed fault the same requests the same way."""

    async def outcomes(seed: int) -> list[int | str]:
        seen: list[int | str] = []
        async with faulty(fault_rate=0.5, seed=seed) as (_, url), session() as s:
            for _ in range(40):
                try:
                    async with s.get(url) as response:
                        seen.append(response.status)
                except aiohttp.ServerDisconnectedError:
                    seen.append("drop")
        return seen

    assert await outcomes(11) == await outcomes(11)
    assert await outcomes(11) != await outcomes(12)


async def test_our_client_rides_through_retryable_faults_to_the_end() -> None:
    """With 30 % retryable faults on reads, our client still follows a batch to its results."""
    clock = ManualClock()
    kinds = ["500", "502", "503", "504", "429", "latency", "drop"]
    rule = FaultRule(rate=0.3, kinds=kinds, endpoints=["retrieve", "results"])
    async with (
        Simulator(api_key=KEY, clock=clock, seed=2, faults=[rule]) as sim,
        Client(api_key=KEY, base_url=sim.base_url, retry=RetryPolicy(max_attempts=12)) as client,
    ):
        created = await client.batches.create(
            [
                {"video": {"type": "asset_id", "asset_id": "a"}, "custom_id": f"c{i}"}
                for i in range(5)
            ],
            defaults={"prompt": {"input_text": "x"}},
        )
        for _ in range(30):
            batch = await client.batches.retrieve(created.batch_id)
            clock.advance(5)
        items = [item async for item in client.batches.results(created.batch_id)]
        faults = sim.stats.faults
    assert batch.status == "completed"
    assert len(items) == 5
    assert sum(faults.values()) > 0


def test_rules_reject_nonsense() -> None:
    """A rate outside 0-1, an unknown endpoint or kind raises ValueError."""
    with pytest.raises(ValueError, match="rate"):
        FaultRule(rate=1.5)
    with pytest.raises(ValueError, match="endpoints"):
        FaultRule(rate=0.1, endpoints=["upload"])
    with pytest.raises(ValueError, match="teapot"):
        FaultRule(rate=0.1, kinds=["teapot"])
