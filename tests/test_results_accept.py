"""Results ask for JSON Lines: a server that negotiates the type strictly still answers."""

from __future__ import annotations

import pytest

from asyncbatch import ResultItem
from tests._server import BATCH_ID, RESULT_LINES, Reply, Seen, connected, error

pytestmark = pytest.mark.anyio

RESULTS_PATH = f"/analyze/batches/{BATCH_ID}/results"


def _strict_jsonl(request: Seen) -> Reply:
    """406 unless the Accept header admits application/jsonl, as a strict server answers."""
    accepted = [part.split(";")[0].strip() for part in request.headers["accept"].split(",")]
    if "application/jsonl" not in accepted:
        return error(406, "not_acceptable", "results are application/jsonl")
    body = b"\n".join(RESULT_LINES) + b"\n"
    return Reply(200, body, headers={"content-type": "application/jsonl"})


async def test_results_accept_header_admits_json_lines() -> None:
    """GET results sends an Accept that names application/jsonl, so strict negotiation passes."""
    async with connected() as (server, client):
        server.on("GET", RESULTS_PATH, _strict_jsonl)
        async with client.batches.results(BATCH_ID) as stream:
            items: list[ResultItem] = [item async for item in stream]
    assert len(items) == len(RESULT_LINES)
    assert "application/json" in server.requests[0].headers["accept"]  # errors stay JSON
