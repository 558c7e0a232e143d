"""Odd input that is easy to give by accident: a string where a list belongs, a BOM, a
page that lists a batch twice, proxies in the environment."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import asyncbatch
from asyncbatch import Client
from asyncbatch._transport import env_proxy
from tests._server import (
    API_KEY,
    BATCH_ID,
    CREATE_REQUEST,
    CREATE_RESPONSE,
    STATUS_BODIES,
    Reply,
    ScriptedServer,
    connected,
    unused_port,
)
from tests.test_cli_support import cli

pytestmark = pytest.mark.anyio

OTHER_ID = "68f4ddaf8aaa60d33df0e801"

MISUSES: dict[str, Callable[[Client], Any]] = {
    "client.watch(id)": lambda c: c.watch(BATCH_ID),
    "client.watch(b'id')": lambda c: c.watch(BATCH_ID.encode()),  # type: ignore[arg-type]
    "Watcher(client, id)": lambda c: asyncbatch.Watcher(c, BATCH_ID),
    "batches.list(status=str)": lambda c: c.batches.list(status="completed"),
    "batches.list(analysis_mode=str)": lambda c: c.batches.list(analysis_mode="general"),
    "batches.create(str)": lambda c: c.batches.create('{"video": {}}'),  # type: ignore[arg-type]
}


async def _first_step(call: Any) -> None:
    """Run the call as far as its first request: a coroutine awaited, an async generator's
    first item asked for, a plain return taken as it is."""
    if hasattr(call, "__anext__"):
        await anext(call)
    elif hasattr(call, "__await__"):
        await call


@pytest.mark.parametrize("misuse", MISUSES)
async def test_a_string_where_a_list_belongs_is_a_type_error_with_a_hint(misuse: str) -> None:
    """A bare string passed for a list of IDs, statuses, modes or requests raises TypeError
    saying to wrap it in a list, and nothing is sent."""
    async with connected() as (server, client):
        with pytest.raises(TypeError, match=r"not a single string: pass \[") as caught:
            await _first_step(MISUSES[misuse](client))
    assert "[" in str(caught.value)
    assert server.requests == []


async def test_a_list_of_one_status_sends_one_filter() -> None:
    """The right spelling, ``status=["completed"]``, sends the one filter."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", Reply(200, {"data": []}))
        assert [b async for b in client.batches.list(status=["completed"])] == []
    assert [v for k, v in server.requests[0].query if k == "status"] == ["completed"]


async def test_a_batch_listed_twice_in_one_page_is_yielded_once() -> None:
    """A page that shows a batch twice (a shift while the server built it) yields it once."""
    first = {**STATUS_BODIES["processing"]}
    other = {**STATUS_BODIES["pending"], "batch_id": OTHER_ID}
    page = {"data": [first, other, first], "page_info": {"page": 1, "total_page": 1}}
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", Reply(200, page))
        ids = [b.batch_id async for b in client.batches.list()]
    assert ids == [BATCH_ID, OTHER_ID]


@pytest.mark.parametrize("source", ["file", "stdin"])
async def test_a_requests_file_with_a_utf8_bom_is_accepted(source: str, tmp_path: Path) -> None:
    """A JSON Lines requests file that starts with a UTF-8 byte order mark (as Windows editors
    write them) creates the batch, from a file or from standard input."""
    text = "\ufeff" + "\n".join(json.dumps(r) for r in CREATE_REQUEST["requests"]) + "\n"
    path = tmp_path / "requests.jsonl"
    path.write_bytes(text.encode("utf-8"))
    async with connected() as (server, _):
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE))
        where = str(path) if source == "file" else "-"
        outcome = await cli(
            "create", where, "--prompt", "Summarise.", base_url=server.url, stdin=text
        )
        (sent,) = server.seen("POST", "/analyze/batches")
    assert outcome.status == 0, outcome.err
    assert outcome.out.strip() == BATCH_ID
    assert len(json.loads(sent.body)["requests"]) == 3


async def test_proxies_from_the_environment_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``$HTTP_PROXY`` set, the client's own session sends its requests through the proxy
    (here the scripted server, which receives the absolute URL's path)."""
    async with ScriptedServer() as proxy:
        proxy.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(200, STATUS_BODIES["pending"]))
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1.3"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        base = "http://api.example.invalid/v1.3"
        async with Client(api_key=API_KEY, base_url=base, allow_insecure_http=True) as client:
            batch = await client.batches.retrieve(BATCH_ID)
    assert batch.status == "pending"
    assert proxy.requests[0].headers["host"] == "api.example.invalid"


def test_no_proxy_and_loopback_hosts_go_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """``$NO_PROXY`` naming the host bypasses the proxy, a loopback host is never proxied, and
    a password in the proxy URL becomes a Proxy-Authorization header, not part of the URL."""
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example.invalid")
    assert env_proxy("https://direct.example.invalid/v1.3") == {}
    assert env_proxy("http://127.0.0.1:8000/v1.3") == {}
    proxied = env_proxy("https://api.twelvelabs.io/v1.3")
    assert str(proxied["proxy"]) == "http://proxy.example.invalid:3128"
    assert proxied["proxy_headers"] == {"Proxy-Authorization": "Basic dXNlcjpwdw=="}


async def test_proxy_lookup_costs_no_thread_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read once per client: requests never wait on a worker thread (which
    would cost every poll a thread hop and let virtual time run past the answer)."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{unused_port()}")
    async with connected() as (server, client):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(200, STATUS_BODIES["pending"]))
        before = threading.active_count()
        for _ in range(20):
            assert (await client.batches.retrieve(BATCH_ID)).status == "pending"
        assert threading.active_count() == before
