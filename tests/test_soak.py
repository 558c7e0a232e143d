"""The fault soak and the request budget: many batches, every fault kind, virtual time.

The long soak is ``python -m tests.soak`` (tests/soak.py); these runs are the
short version the suite can afford.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asyncbatch import Client, EventKind
from asyncbatch.testing import FaultKind, Simulator
from tests.soak import KEY, SoakConfig, soak

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("strategy", ["auto", "per_id"])
async def test_fault_soak_keeps_every_guarantee(strategy: str) -> None:
    """200 batches under ~30% faults of every kind (and rare 600 s 429s): each ends once,
    matching the server, never backwards or twice, within the budget, with bounded state."""
    config = SoakConfig(batches=200, concurrent=40, strategy=strategy, seed=7)
    report = await soak(config)
    print("\n".join(report.lines()))
    assert report.violations == []
    assert report.finals == {EventKind.DONE: 200}
    assert {str(kind) for kind in FaultKind} <= set(report.faults)
    assert report.retries > 0
    assert report.rate_limited > 0
    assert report.total_requests <= report.request_allowance
    # Memory: the consumer forgets ended batches, so tracked state never exceeds
    # the open batches, and the event buffer stays within its size plus one
    # event per open batch (what a sweep may return at once).
    assert report.peak_tracked <= config.concurrent
    assert report.peak_buffered <= 64 + config.concurrent


@asynccontextmanager
async def _simulated(**options: Any) -> AsyncIterator[tuple[Simulator, Client]]:
    async with (
        Simulator(api_key=KEY, seed=3, max_active=1000, **options) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        yield sim, client


async def test_budget_bounds_requests_when_polling_wants_more() -> None:
    """With 30 batches due every second and a budget of 2/s, requests stay within
    elapsed x rate + burst, and the budget is what limits them (it is used up)."""
    async with _simulated(item_seconds=10_000.0) as (sim, client):
        ids = [sim.create_batch(2)["batch_id"] for _ in range(30)]
        started = anyio.current_time()
        options: dict[str, Any] = {"min_interval": 1.0, "max_interval": 1.0, "strategy": "per_id"}
        async with client.watch(
            ids, requests_per_second=2.0, burst=4.0, timeout=100.0, **options
        ) as watcher:
            async for _ in watcher:
                pass
        allowance = (anyio.current_time() - started) * 2.0 + 4.0
        assert sim.stats.total_requests <= allowance
        assert sim.stats.total_requests >= 0.9 * allowance


async def test_budget_counts_every_page_of_a_sweep() -> None:
    """With 150 active batches a sweep takes 3 pages; each page is a request the budget counts."""
    async with _simulated(item_seconds=10_000.0) as (sim, client):
        ids = [sim.create_batch(2)["batch_id"] for _ in range(150)]
        started = anyio.current_time()
        async with client.watch(
            ids,
            strategy="sweep",
            min_interval=1.0,
            max_interval=1.0,
            requests_per_second=0.5,
            burst=1.0,
            timeout=200.0,
        ) as watcher:
            async for _ in watcher:
                pass
        assert sim.stats.requests["list"] >= 3  # it did sweep, in several pages
        allowance = (anyio.current_time() - started) * 0.5 + 1.0
        assert sim.stats.total_requests <= allowance
