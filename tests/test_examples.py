"""The shipped examples run as the README says: requests.jsonl creates a batch, and the
service loop adds batches, handles their events and stops cleanly."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pytest

import asyncbatch
from asyncbatch._cli.create import load_create_body
from asyncbatch.testing import Simulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.anyio


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_example_requests_file_creates_a_batch_that_completes() -> None:
    """examples/requests.jsonl loads as a create body whose batch completes with all its items."""
    body = load_create_body(str(EXAMPLES / "requests.jsonl"), None)
    async with (
        Simulator(api_key="k", seed=2) as sim,
        asyncbatch.Client(api_key="k", base_url=sim.base_url) as client,
    ):
        final = await client.batches.create_and_wait(
            body["requests"], defaults={"prompt": {"input_text": "Summarise the video."}}
        )
    assert final.status == "completed"
    assert final.total_items == len(body["requests"]) == 3


async def test_service_loop_example_handles_every_batch_and_stops_cleanly() -> None:
    """The service-loop example reports each batch done and ready, then stops cleanly."""
    service_loop = _load("service_loop")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await service_loop.main()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert all(" done: completed, 1/1 ready" in line for line in lines[:3])
    assert lines[3].startswith("stopped cleanly after ")
