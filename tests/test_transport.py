"""Retries, timeouts, deadlines and error mapping of the transport, seen through the client."""

from __future__ import annotations

import inspect
import ssl

import aiohttp
import aiohttp.client_exceptions
import anyio
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from asyncbatch import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBatchError,
    Client,
    DecodeError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from asyncbatch._transport import _client_failure
from tests._server import (
    API_KEY,
    BATCH_ID,
    CREATE_RESPONSE,
    FLAT_429,
    STATUS_BODIES,
    Reply,
    ScriptedServer,
    connected,
    error,
    unused_port,
)

pytestmark = pytest.mark.anyio

BATCH_PATH = f"/analyze/batches/{BATCH_ID}"
PENDING = Reply(200, STATUS_BODIES["pending"])
ONE_ITEM = [{"video": {"type": "asset_id", "asset_id": "a"}, "custom_id": "a-1"}]


async def test_5xx_is_retried_then_succeeds() -> None:
    """Transient 500/502/503/504 answers are retried until the batch comes back."""
    async with connected() as (server, client):
        server.on(
            "GET", BATCH_PATH, error(500, "x"), error(502, "x"), Reply(503), Reply(504), PENDING
        )
        batch = await client.batches.retrieve(batch_id=BATCH_ID, retry=RetryPolicy(max_attempts=5))
    assert batch.status == "pending"
    assert len(server.requests) == 5
    assert all(r.headers["x-api-key"] == API_KEY for r in server.requests)


async def test_5xx_exhausts_attempts_into_server_error() -> None:
    """A server that keeps failing gives ServerError after max_attempts requests."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, error(500, "internal", "boom"))
        with pytest.raises(ServerError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert (info.value.status, info.value.code, info.value.message) == (500, "internal", "boom")
    assert len(server.requests) == 4


async def test_html_error_body_keeps_its_text() -> None:
    """A gateway's non-JSON error page becomes the message, and the status is kept."""
    async with connected(retry=RetryPolicy(max_attempts=1)) as (server, client):
        server.on("GET", BATCH_PATH, Reply(502, "<html>Bad Gateway</html>"))
        with pytest.raises(ServerError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.status == 502
    assert info.value.code is None
    assert info.value.message == "<html>Bad Gateway</html>"


async def test_429_with_a_short_retry_after_waits_then_succeeds() -> None:
    """A 429 naming 7 s is slept through (virtual time) and the retry succeeds."""
    async with connected() as (server, client):
        server.on(
            "GET", BATCH_PATH, error(429, "too_many_requests", **{"retry-after": "7"}), PENDING
        )
        start = anyio.current_time()
        await client.batches.retrieve(BATCH_ID)
        waited = anyio.current_time() - start
    assert len(server.requests) == 2
    assert 7.0 <= waited < 8.0


async def test_429_with_a_long_retry_after_raises_at_once() -> None:
    """The observed flat 429 with retry-after 11382 raises RateLimitError without sleeping."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, FLAT_429)
        start = anyio.current_time()
        with pytest.raises(RateLimitError) as info:
            await client.batches.retrieve(BATCH_ID)
        assert anyio.current_time() == start
    assert info.value.retry_after == 11382
    assert info.value.code == "too_many_requests"
    assert info.value.headers["x-ratelimit-remaining"] == "0"
    assert len(server.requests) == 1


async def test_429_with_an_http_date_retry_after() -> None:
    """A Retry-After date 45 s past the response's Date is slept; two hours past is raised."""
    date = {"date": "Mon, 20 Jul 2026 10:00:00 GMT"}
    soon = error(
        429, "too_many_requests", **date, **{"retry-after": "Mon, 20 Jul 2026 10:00:45 GMT"}
    )
    later = error(
        429, "too_many_requests", **date, **{"retry-after": "Mon, 20 Jul 2026 12:00:00 GMT"}
    )
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, soon, PENDING)
        start = anyio.current_time()
        await client.batches.retrieve(BATCH_ID)
        assert 45.0 <= anyio.current_time() - start < 46.0
        server.on("GET", BATCH_PATH, later)
        with pytest.raises(RateLimitError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.retry_after == 7200.0


async def test_429_without_retry_after_backs_off_then_raises() -> None:
    """A 429 naming no wait is retried with backoff; the last one raises with retry_after None."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, error(429, "too_many_requests"))
        with pytest.raises(RateLimitError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.retry_after is None
    assert len(server.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    """4xx answers other than 408/429 are final after one request."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, error(status, "nope"))
        with pytest.raises(APIStatusError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.status == status
    assert len(server.requests) == 1


@pytest.mark.parametrize("final", [error(500, "x"), Reply(504)])
async def test_create_is_not_retried_after_500_or_504(final: Reply) -> None:
    """A 500/504 on create may hide a made batch: it is raised after one request."""
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", final)
        with pytest.raises(ServerError):
            await client.batches.create(requests=ONE_ITEM)
    assert len(server.requests) == 1


async def test_create_is_not_retried_after_a_timeout() -> None:
    """A create whose answer never came is not sent again."""
    async with connected(timeout=10.0) as (server, client):
        server.on("POST", "/analyze/batches", Reply(201, CREATE_RESPONSE, delay=30.0))
        with pytest.raises(APITimeoutError):
            await client.batches.create(requests=ONE_ITEM)
    assert len(server.requests) == 1


@pytest.mark.parametrize("refusal", [error(429, "too_many_requests", **{"retry-after": "1"}),
                                     error(503, "unavailable")])  # fmt: skip
async def test_create_is_retried_after_429_and_503(refusal: Reply) -> None:
    """429 and 503 prove no batch was made, so create retries and succeeds."""
    async with connected() as (server, client):
        server.on("POST", "/analyze/batches", refusal, refusal, Reply(201, CREATE_RESPONSE))
        created = await client.batches.create(requests=ONE_ITEM)
    assert created.batch_id == BATCH_ID
    assert len(server.requests) == 3
    assert server.requests[0].body == server.requests[2].body


async def test_malformed_json_is_a_decode_error_with_a_snippet() -> None:
    """A 200 whose body is not JSON raises DecodeError carrying the body's start."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, b'{"batch_id": "68f4dd'))
        with pytest.raises(DecodeError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.snippet == b'{"batch_id": "68f4dd'
    assert info.value.line_number is None
    assert len(server.requests) == 1


async def test_schema_breaking_json_is_a_decode_error() -> None:
    """Valid JSON of the wrong shape raises DecodeError naming the field."""
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, {**STATUS_BODIES["pending"], "total_items": "x"}))
        with pytest.raises(DecodeError, match="total_items"):
            await client.batches.retrieve(BATCH_ID)


async def test_slow_response_times_out_within_the_client_timeout() -> None:
    """An answer held back past the request timeout raises APITimeoutError at the timeout."""
    async with connected(timeout=10.0, retry=RetryPolicy(max_attempts=1)) as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"], delay=3600.0))
        start = anyio.current_time()
        with pytest.raises(APITimeoutError):
            await client.batches.retrieve(BATCH_ID)
        assert anyio.current_time() - start == pytest.approx(10.0, abs=0.5)


async def test_timeouts_are_retried_for_reads() -> None:
    """A GET that timed out is retried, and a prompt answer then succeeds."""
    async with connected(timeout=10.0) as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"], delay=3600.0), PENDING)
        batch = await client.batches.retrieve(BATCH_ID)
    assert batch.status == "pending"
    assert len(server.requests) == 2


async def test_call_timeout_cuts_a_slow_request() -> None:
    """timeout= on a call is shorter than the client timeout and wins."""
    async with connected(timeout=60.0) as (server, client):
        server.on("GET", BATCH_PATH, Reply(200, STATUS_BODIES["pending"], delay=3600.0))
        start = anyio.current_time()
        with pytest.raises(APITimeoutError):
            await client.batches.retrieve(BATCH_ID, timeout=5.0)
        assert anyio.current_time() - start <= 5.0 + 1e-6
    assert len(server.requests) == 1


async def test_call_timeout_bounds_the_retries() -> None:
    """With 10 s Retry-After waits, a 25 s call deadline allows 3 attempts, then raises."""
    busy = error(503, "unavailable", **{"retry-after": "10"})
    async with connected(retry=RetryPolicy(max_attempts=10)) as (server, client):
        server.on("GET", BATCH_PATH, busy)
        start = anyio.current_time()
        with pytest.raises(ServerError):
            await client.batches.retrieve(BATCH_ID, timeout=25.0)
        elapsed = anyio.current_time() - start
    assert len(server.requests) == 3
    assert 20.0 <= elapsed < 25.0


async def test_connection_refused_is_a_connection_error() -> None:
    """Nobody listening gives APIConnectionError after the retries, caused by aiohttp's error."""
    url = f"http://127.0.0.1:{unused_port()}/v1.3"
    async with Client(api_key=API_KEY, base_url=url, retry=RetryPolicy(max_attempts=2)) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert not isinstance(info.value, APITimeoutError)
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)


async def test_a_body_cut_short_is_a_connection_error() -> None:
    """A status body dropped mid-way is APIConnectionError (after retries), not a decode error."""
    cut = Reply(200, chunks=[b'{"batch_id":'], cut=True)
    async with connected() as (server, client):
        server.on("GET", BATCH_PATH, cut)
        with pytest.raises(APIConnectionError):
            await client.batches.retrieve(BATCH_ID)
    assert len(server.requests) == 4


async def test_redirects_are_not_followed_with_the_key() -> None:
    """A redirect never carries the API key to another host; it is reported as a status error."""
    async with connected() as (server, client), ScriptedServer() as elsewhere:
        elsewhere.on("GET", BATCH_PATH, PENDING)
        server.on("GET", BATCH_PATH, Reply(302, headers={"location": elsewhere.url + BATCH_PATH}))
        with pytest.raises(APIStatusError) as info:
            await client.batches.retrieve(BATCH_ID)
    assert info.value.status == 302
    assert elsewhere.requests == []


# The mapping boundary, class by class.


def _exception_classes() -> list[type[aiohttp.ClientError]]:
    names = set(aiohttp.client_exceptions.__all__) | set(aiohttp.__all__)
    found = {
        getattr(module, name)
        for module in (aiohttp, aiohttp.client_exceptions)
        for name in names
        if inspect.isclass(getattr(module, name, None))
    }
    return sorted(
        (c for c in found if issubclass(c, aiohttp.ClientError)), key=lambda c: c.__name__
    )


def _make(cls: type[aiohttp.ClientError]) -> aiohttp.ClientError:
    """A sensible instance of each aiohttp exception class, whatever its constructor wants."""
    key = ConnectionKey("api.example", 443, True, True, None, None, None, None)
    if issubclass(cls, aiohttp.ClientConnectorCertificateError):
        return cls(key, ssl.SSLCertVerificationError("bad cert"))
    if issubclass(cls, aiohttp.ClientConnectorError):
        return cls(key, ConnectionRefusedError(111, "Connection refused"))
    if issubclass(cls, aiohttp.ClientResponseError):
        # The request info holds the key: the mapped error must not show it.
        headers = CIMultiDictProxy(CIMultiDict({"x-api-key": API_KEY}))
        url = URL("https://api.example/v1.3/analyze/batches")
        return cls(RequestInfo(url, "GET", headers, url), (), status=502, message="bad")
    if issubclass(cls, aiohttp.ServerFingerprintMismatch):
        return cls(b"expected", b"got", "api.example", 443)
    if issubclass(cls, aiohttp.InvalidURL):
        return cls("api.example:notaport", "bad port")
    return cls("it broke")


CLASSES = _exception_classes()


def test_the_walk_covers_aiohttp() -> None:
    """The class walk sees every aiohttp client exception, so none is left untested."""
    names = {c.__name__ for c in CLASSES}
    assert len(CLASSES) >= 25
    assert {"ClientPayloadError", "ServerDisconnectedError", "TooManyRedirects"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("creates", [False, True])
def test_every_aiohttp_error_maps_to_an_asyncbatch_error(
    cls: type[aiohttp.ClientError], creates: bool
) -> None:
    """Each aiohttp exception raised in the mapping boundary comes out as an asyncbatch error."""
    raised = _make(cls)
    failure = _client_failure(raised, "GET", "https://h/x", creates=creates)
    mapped = failure.error
    assert isinstance(mapped, AsyncBatchError)
    assert mapped.__cause__ is raised
    if isinstance(raised, TimeoutError):
        assert isinstance(mapped, APITimeoutError)
        assert failure.retryable is not creates
    chain: BaseException | None = mapped
    while chain is not None:
        assert API_KEY not in str(chain)
        chain = chain.__cause__


@pytest.mark.parametrize(
    "raised",
    [ConnectionResetError(104, "reset"), OSError(5, "io"), TimeoutError()],
    ids=lambda e: type(e).__name__,
)
def test_socket_errors_map_too(raised: Exception) -> None:
    """Bare OSError and TimeoutError from the socket layer map as well."""
    failure = _client_failure(raised, "GET", "https://h/x", creates=False)
    assert isinstance(failure.error, APIConnectionError)


def test_only_a_connect_failure_lets_create_retry() -> None:
    """For create, a refused connection may retry; a dropped one may not (it may have arrived)."""
    key = ConnectionKey("h", 443, True, True, None, None, None, None)
    outcomes: dict[str, bool] = {}
    for raised in (
        aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused")),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
    ):
        failure = _client_failure(raised, "POST", "https://h", creates=True)
        outcomes[type(raised).__name__] = failure.retryable
    assert outcomes == {
        "ClientConnectorError": True,
        "ServerDisconnectedError": False,
        "ClientPayloadError": False,
    }


def test_programmer_errors_pass_through_the_boundary() -> None:
    """Exceptions that are not network failures are not disguised as connection errors."""
    with pytest.raises(KeyError):
        _client_failure(KeyError("bug"), "GET", "https://h/x", creates=False)
