"""Every batch endpoint against the scripted server: the requests sent, the answers decoded."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from asyncbatch import (
    Batch,
    BatchItemRequest,
    Client,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    CreatedBatch,
    DecodeError,
    InvalidBatchIdError,
    InvalidRequestError,
    NotFoundError,
    VideoSource,
)
from tests._server import (
    API_KEY,
    BATCH_ID,
    CREATE_REQUEST,
    CREATE_RESPONSE,
    LIST_BODY,
    STATUS_BODIES,
    Reply,
    ScriptedServer,
    Seen,
    connected,
    error,
)

pytestmark = pytest.mark.anyio

BATCH_PATH = f"/analyze/batches/{BATCH_ID}"


def _batch_body(n: int, status: str = "processing") -> dict[str, Any]:
    return {**STATUS_BODIES[status], "batch_id": f"{n:024x}"}


async def test_retrieve_sends_the_key_and_decodes() -> None:
    """retrieve GETs the batch with x-api-key and returns a Batch."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["completed"]))
        batch = await client.batches.retrieve(BATCH_ID)
    assert isinstance(batch, Batch)
    assert (batch.status, batch.ready_items, batch.failed_items) == ("completed", 3, 1)
    (seen,) = server.requests
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.method == "GET"


async def test_cancel_posts_and_decodes_the_202() -> None:
    """cancel POSTs to /cancel with no body and decodes the 202 snapshot."""
    async with connected() as (server, client):
        server.on("POST", f"{BATCH_PATH}/cancel", Reply(202, STATUS_BODIES["canceling"]))
        batch = await client.batches.cancel(BATCH_ID)
    assert batch.status == "canceling"
    assert server.requests[0].body == b""


@pytest.mark.parametrize("status", [200, 204])
async def test_delete_accepts_200_and_204(status: int) -> None:
    """DELETE succeeds on 200 (current spec) and 204 (earlier spec), both without a body."""
    async with connected() as (server, client):
        server.on("DELETE", BATCH_PATH, Reply(status))
        await client.batches.delete(BATCH_ID)
    assert [r.method for r in server.requests] == ["DELETE"]


async def test_create_sends_the_reference_request_and_decodes_the_201() -> None:
    """create encodes dicts into the documented body (unset options left out) and decodes 201."""
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE))
        created = await client.batches.create(
            requests=CREATE_REQUEST["requests"],
            model_name="pegasus1.5",
            analysis_mode="general",
            defaults=CREATE_REQUEST["defaults"],
        )
    assert isinstance(created, CreatedBatch)
    assert [i.custom_id for i in created.items] == ["summary-001", "summary-002", None]
    (seen,) = server.requests
    assert json.loads(seen.body) == CREATE_REQUEST
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-api-key"] == API_KEY


async def test_create_accepts_request_structs() -> None:
    """Request structs encode the same as the equivalent dicts."""
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE))
        await client.batches.create(
            requests=[BatchItemRequest(video=VideoSource(asset_id="a1"), custom_id="x-1")]
        )
    assert json.loads(server.requests[0].body)["requests"] == [
        {"video": {"asset_id": "a1", "type": "asset_id"}, "custom_id": "x-1"}
    ]


async def test_list_repeats_filter_keys() -> None:
    """Several status / analysis_mode values go out as repeated keys, as the API wants."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", Reply(200, LIST_BODY))
        got = [
            b
            async for b in client.batches.list(
                status=["processing", "canceling"], analysis_mode=["general", "time_based_metadata"]
            )
        ]
    assert [b.batch_id for b in got] == [BATCH_ID]
    (seen,) = server.requests
    assert [v for k, v in seen.query if k == "status"] == ["processing", "canceling"]
    assert [v for k, v in seen.query if k == "analysis_mode"] == ["general", "time_based_metadata"]
    assert ("page", "1") in seen.query


def _paged(
    total: int, per_page: int, *, info: bool = True, total_page: int | None = None
) -> Callable[[Seen], Reply]:
    """A list handler serving ``total`` batches in pages, honest unless told otherwise."""
    pages = max(1, -(-total // per_page))

    def answer(seen: Seen) -> Reply:
        page = int(dict(seen.query)["page"])
        start = (page - 1) * per_page
        data = [_batch_body(n) for n in range(start, min(total, start + per_page))]
        body: dict[str, Any] = {"data": data}
        if info:
            body["page_info"] = {
                "page": page,
                "limit_per_page": per_page,
                "total_page": pages if total_page is None else total_page,
                "total_results": total,
            }
        return Reply(200, body)

    return answer


async def test_list_walks_every_page_lazily_and_stops_at_total_page() -> None:
    """Pages are fetched as iteration needs them, and none past page_info.total_page."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", _paged(total=7, per_page=3))
        batches = client.batches.list(page_limit=3)
        first = await anext(aiter(batches))
        assert len(server.requests) == 1
        rest = [b async for b in batches]
    assert [int(b.batch_id, 16) for b in [first, *rest]] == list(range(7))
    assert [dict(r.query)["page"] for r in server.requests] == ["1", "2", "3"]


async def test_list_with_an_exact_last_page_asks_no_further() -> None:
    """When the last page is full, total_page still stops the walk without an empty request."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", _paged(total=6, per_page=3))
        assert len([b async for b in client.batches.list(page_limit=3)]) == 6
    assert len(server.requests) == 2


async def test_list_without_page_info_stops_at_a_short_page() -> None:
    """Without page_info the walk ends at the first short page."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", _paged(total=7, per_page=3, info=False))
        assert len([b async for b in client.batches.list(page_limit=3)]) == 7
    assert len(server.requests) == 3


async def test_list_whose_page_info_overstates_stops_at_an_empty_page() -> None:
    """A total_page larger than the truth ends at the first empty page."""
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", _paged(total=4, per_page=2, total_page=100))
        assert len([b async for b in client.batches.list(page_limit=2)]) == 4
    assert len(server.requests) == 3


async def test_list_on_a_server_that_ignores_the_page_number_ends() -> None:
    """A server that serves the same full page forever (no page_info) does not loop us forever."""
    full_page = {"data": [_batch_body(n) for n in range(2)]}
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", Reply(200, full_page))
        got = [b.batch_id async for b in client.batches.list(page_limit=2)]
    assert got == [f"{0:024x}", f"{1:024x}"]
    assert len(server.requests) <= 3


async def test_list_on_a_server_that_clamps_the_page_ends() -> None:
    """page_info naming another page than the one asked for ends the walk."""
    clamped = {**LIST_BODY, "page_info": {"page": 1, "total_page": 5, "limit_per_page": 1}}
    async with connected() as (server, client):
        server.on("GET", "/analyze/batches", Reply(200, clamped))
        assert len([b async for b in client.batches.list(page_limit=1)]) == 1
    assert len(server.requests) == 2


@pytest.mark.parametrize("page_limit", [0, 51])
async def test_list_rejects_a_page_limit_out_of_range(page_limit: int) -> None:
    """page_limit outside 1..50 is refused before any request."""
    async with connected() as (server, client):
        with pytest.raises(ValueError, match="page_limit"):
            await anext(aiter(client.batches.list(page_limit=page_limit)))
    assert server.requests == []


async def test_404_is_not_found() -> None:
    """A 404 on any batch endpoint raises NotFoundError with the body's code."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, error(404, "resource_not_exist", "Batch not found"))
        with pytest.raises(NotFoundError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert (info.value.status, info.value.code, info.value.message) == (
        404,
        "resource_not_exist",
        "Batch not found",
    )
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("DELETE", BATCH_PATH, "batch_not_terminal"),
        ("POST", f"{BATCH_PATH}/cancel", "batch_completed"),
        ("POST", f"{BATCH_PATH}/cancel", "batch_canceled"),
        ("POST", f"{BATCH_PATH}/cancel", "batch_expired"),
    ],
)
async def test_409_is_a_conflict_naming_the_state(method: str, path: str, code: str) -> None:
    """409 raises ConflictError at once, its .code naming the batch's state."""
    async with connected() as (server, client):
        server.on(method, path, error(409, code, "nope"))
        call = client.batches.delete if method == "DELETE" else client.batches.cancel
        with pytest.raises(ConflictError) as info:
            await call(BATCH_ID)
    assert info.value.code == code
    assert info.value.status == 409
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        BATCH_ID + "0",
        BATCH_ID[:-1],
        "68f4ddaf8aaa60d33df0e80g",
        "../tasks",
        "%2F" * 8,
        "68f4ddaf8aaa60d33df0e8\u0660\u0660",
        "68f4ddaf8aaa60d33df0e80\n",
        " " + BATCH_ID[1:],
        None,
        12345,
        b"68f4ddaf8aaa60d33df0e800",
    ],
)
async def test_invalid_batch_ids_are_refused_before_any_request(bad_id: Any) -> None:
    """Every batch_id method refuses a malformed ID with InvalidBatchIdError, sending nothing."""
    async with connected() as (server, client):
        for call in (client.batches.retrieve, client.batches.cancel, client.batches.delete):
            with pytest.raises(InvalidBatchIdError):
                await call(bad_id)
        with pytest.raises(InvalidBatchIdError):
            client.batches.results(bad_id)
    assert server.requests == []


def _item(custom_id: str | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"video": {"type": "asset_id", "asset_id": "a"}, **extra}
    if custom_id is not None:
        item["custom_id"] = custom_id
    return item


@pytest.mark.parametrize(
    ("requests", "options"),
    [
        ([], {}),
        ([_item() for _ in range(1001)], {}),
        ([_item("")], {}),
        ([_item("x" * 65)], {}),
        ([_item("has space")], {}),
        ([_item("émoji")], {}),
        ([_item("dup"), _item("ok"), _item("dup")], {}),
        ([_item(colour="red")], {}),
        ([{"custom_id": "no-video"}], {}),
        ([{"video": {"type": "url", "asset_id": "a"}}], {}),
        ([_item()], {"analysis_mode": "sideways"}),
        ([_item()], {"defaults": {"promt": {"input_text": "typo"}}}),
        (["not a dict"], {}),
        ([_item()], {"defaults": {"temperature": float("nan")}}),
        ([_item(temperature=1.5)], {}),
        ([_item(min_segment_duration=1)], {}),
        (
            [_item()],
            {
                "defaults": {
                    "response_format": {"type": "json_schema", "json_schema": {"x": object()}}
                }
            },
        ),
    ],
)
async def test_bad_create_input_is_refused_before_any_request(
    requests: list[Any], options: dict[str, Any]
) -> None:
    """Create checks count, custom_id format and uniqueness, and unknown keys before sending."""
    async with connected() as (server, client):
        with pytest.raises(InvalidRequestError):
            await client.batches.create(requests=requests, **options)
    assert server.requests == []


async def test_naive_timestamp_from_the_server_is_a_decode_error() -> None:
    """A status body whose timestamp has no offset raises asyncbatch's DecodeError."""
    naive = {**STATUS_BODIES["pending"], "created_at": "2026-07-20T10:00:00"}
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, naive))
        with pytest.raises(DecodeError, match="created_at"):
            await client.batches.retrieve(BATCH_ID)


async def test_create_accepts_the_limits() -> None:
    """1,000 requests and a 64-character custom_id are within the rules."""
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE))
        requests = [_item(f"id-{n}") for n in range(999)] + [_item("x" * 64)]
        await client.batches.create(requests=requests)
    assert len(json.loads(server.requests[0].body)["requests"]) == 1000


def test_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No api_key and no environment variable refuses to build a client."""
    monkeypatch.delenv("TWELVELABS_API_KEY", raising=False)
    monkeypatch.delenv("TWELVE_LABS_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="API key"):
        Client()


def test_explicit_empty_key_does_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit empty api_key is refused, not silently replaced by the environment's."""
    monkeypatch.setenv("TWELVELABS_API_KEY", "from-env")
    with pytest.raises(ConfigurationError, match="API key"):
        Client(api_key="")


async def test_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TWELVE_LABS_API_KEY and $TWELVELABS_BASE_URL are used when no argument is given."""
    async with ScriptedServer() as server:
        monkeypatch.delenv("TWELVELABS_API_KEY", raising=False)
        monkeypatch.setenv("TWELVE_LABS_API_KEY", "from-env")
        monkeypatch.setenv("TWELVELABS_BASE_URL", server.url)
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"]))
        async with Client() as client:
            await client.batches.retrieve(BATCH_ID)
        assert client.base_url == server.url
    assert server.requests[0].headers["x-api-key"] == "from-env"


@pytest.mark.parametrize(
    "url", ["http://api.example.com/v1.3", "http://10.0.0.1/v1.3", "ftp://127.0.0.1/", "nonsense"]
)
def test_unsafe_base_url_is_a_configuration_error(url: str) -> None:
    """Plain http:// to a non-loopback host (or a non-http URL) is refused."""
    with pytest.raises(ConfigurationError):
        Client(api_key=API_KEY, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1.3", "http://localhost/v1.3", "http://[::1]:9/v1.3"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    """Loopback hosts may use plain http:// (the simulator)."""
    assert Client(api_key=API_KEY, base_url=url + "/").base_url == url


def test_plain_http_to_a_remote_host_can_be_opted_into() -> None:
    """allow_insecure_http=True accepts http:// to any host."""
    client = Client(
        api_key=API_KEY, base_url="http://api.example.com/v1.3", allow_insecure_http=True
    )
    assert client.base_url == "http://api.example.com/v1.3"


async def test_a_borrowed_session_is_used_and_left_open() -> None:
    """The caller's aiohttp session carries the requests and is not closed by aclose."""
    async with ScriptedServer() as server, aiohttp.ClientSession(headers={"x-mark": "mine"}) as own:
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"]))
        async with Client(api_key=API_KEY, base_url=server.url, session=own) as client:
            await client.batches.retrieve(BATCH_ID)
        assert not own.closed
        assert server.requests[0].headers["x-mark"] == "mine"
        assert server.requests[0].headers["x-api-key"] == API_KEY


@pytest.mark.parametrize("borrowed", [False, True])
async def test_every_request_carries_the_key_accept_and_user_agent(borrowed: bool) -> None:
    """GETs and the create carry x-api-key, Accept and our User-Agent whether the session is
    the client's own (it holds them as its defaults) or borrowed (they go with each request);
    only the create has a JSON Content-Type; the borrowed session's defaults are untouched."""
    async with ScriptedServer() as server, aiohttp.ClientSession() as own:
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"]))
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE))
        session = own if borrowed else None
        async with Client(api_key=API_KEY, base_url=server.url, session=session) as client:
            await client.batches.retrieve(BATCH_ID)
            await client.batches.create(requests=CREATE_REQUEST["requests"])
        assert "x-api-key" not in own.headers
    get, post = server.requests
    for seen in (get, post):
        assert seen.headers["x-api-key"] == API_KEY
        assert seen.headers["accept"] == "application/json, application/jsonl"
        assert seen.headers["user-agent"].startswith("asyncbatch/")
    assert "content-type" not in get.headers
    assert post.headers["content-type"] == "application/json"


async def test_calls_after_aclose_raise_client_closed() -> None:
    """Every call on a closed client raises ClientClosedError without a request."""
    async with connected() as (server, client):
        await client.aclose()
        await client.aclose()  # idempotent
        with pytest.raises(ClientClosedError):
            await client.batches.retrieve(BATCH_ID)
        with pytest.raises(ClientClosedError):
            await anext(aiter(client.batches.list()))
        with pytest.raises(ClientClosedError):
            await client.batches.create(requests=[_item()])
        with pytest.raises(ClientClosedError):
            await anext(client.batches.results(BATCH_ID))
    assert server.requests == []
