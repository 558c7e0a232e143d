"""The exception tree, and the API key kept out of every repr, message and log record."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

import asyncbatch
from asyncbatch import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBatchError,
    AuthenticationError,
    BadRequestError,
    Client,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DecodeError,
    InvalidBatchIdError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from asyncbatch._errors import status_error_class
from tests._server import (
    API_KEY,
    BATCH_ID,
    FLAT_429,
    STATUS_BODIES,
    Reply,
    connected,
    error,
    unused_port,
)

BATCH_PATH = f"/analyze/batches/{BATCH_ID}"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (500, ServerError),
        (503, ServerError),
        (599, ServerError),
        (418, APIStatusError),
        (302, APIStatusError),
    ],
)
def test_status_classes(status: int, cls: type[APIStatusError]) -> None:
    """Each documented status maps to its class; others fall back to APIStatusError."""
    assert status_error_class(status) is cls


def test_the_tree() -> None:
    """API failures share one root; timeouts are TimeoutErrors; mistakes stay outside the root."""
    for cls in (APIStatusError, APIConnectionError, DecodeError, WaitTimeoutError):
        assert issubclass(cls, AsyncBatchError)
    assert issubclass(WebhookVerificationError, AsyncBatchError)
    for cls in (BadRequestError, AuthenticationError, NotFoundError, ConflictError):
        assert issubclass(cls, APIStatusError)
    assert issubclass(RateLimitError, APIStatusError)
    assert issubclass(ServerError, APIStatusError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APITimeoutError, TimeoutError)
    assert issubclass(WaitTimeoutError, TimeoutError)
    for mistake in (InvalidBatchIdError, InvalidRequestError, ConfigurationError):
        assert issubclass(mistake, ValueError)
        assert not issubclass(mistake, AsyncBatchError)
    assert issubclass(ClientClosedError, RuntimeError)
    assert not issubclass(ClientClosedError, AsyncBatchError)


def test_status_error_describes_the_request_and_body() -> None:
    """The message names method, URL, status, code and message; attributes hold them."""
    err = ConflictError(
        status=409,
        code="batch_not_terminal",
        message="still processing",
        headers={"x-trace-id": "t1"},
        method="DELETE",
        url="https://api.twelvelabs.io/v1.3/analyze/batches/abc",
    )
    assert str(err) == (
        "DELETE https://api.twelvelabs.io/v1.3/analyze/batches/abc answered 409: "
        "batch_not_terminal (still processing)"
    )
    assert err.headers == {"x-trace-id": "t1"}


def test_rate_limit_error_states_the_wait() -> None:
    """RateLimitError carries retry_after and says it."""
    err = RateLimitError(
        status=429, code=None, message=None, headers={}, method="GET", url="u", retry_after=11382
    )
    assert err.retry_after == 11382
    assert str(err).endswith("retry after 11382 s")


def test_decode_error_shows_line_and_snippet() -> None:
    """DecodeError names its line and shows the snippet."""
    err = DecodeError("bad item", snippet=b'{"x":', line_number=4)
    assert (err.snippet, err.line_number) == (b'{"x":', 4)
    assert str(err) == "bad item at line 4: b'{\"x\":'"


# The API key, nowhere.


def _no_key_anywhere(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert API_KEY not in str(seen)
        assert API_KEY not in repr(seen)
        assert API_KEY not in repr(vars(seen))
        seen = seen.__cause__ or seen.__context__


def test_reprs_hide_the_key() -> None:
    """repr and str of Client, Batches and ResultStream never show the key."""
    client = Client(api_key=API_KEY, base_url="http://127.0.0.1:9/v1.3")
    for obj in (client, client.batches, client.batches.results(BATCH_ID)):
        assert API_KEY not in repr(obj)
        assert API_KEY not in str(obj)
    assert repr(client) == "<asyncbatch.Client base_url='http://127.0.0.1:9/v1.3'>"


@pytest.mark.parametrize(
    "key", ["s3cr3t-k\n", " s3cr3t-k", "s3cr3t\tk", "s3cr3t\x00k", "s3cr3t-\u00e9"]
)
def test_a_key_with_control_characters_is_refused_without_echoing_it(key: str) -> None:
    """A key read with its newline is a ConfigurationError that does not quote the key."""
    with pytest.raises(ConfigurationError) as info:
        Client(api_key=key, base_url="http://127.0.0.1:9/v1.3")
    assert "s3cr3t" not in str(info.value)


Call = Callable[[asyncbatch.Client], Awaitable[object]]


async def _retrieve(client: Client) -> object:
    return await client.batches.retrieve(BATCH_ID)


async def _results(client: Client) -> object:
    async with client.batches.results(BATCH_ID) as items:
        return [item async for item in items]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "call"),
    [
        (error(401, "api_key_invalid", "API Key is either invalid or expired"), _retrieve),
        (error(500, "internal"), _retrieve),
        (FLAT_429, _retrieve),
        (Reply(200, b"{not json"), _retrieve),
        (Reply(200, b'{"bad":1}\n'), _results),
        (Reply(200, chunks=[b'{"task_id":'], cut=True), _results),
        (Reply(200, STATUS_BODIES["pending"], delay=3600.0), _retrieve),
    ],
)
async def test_raised_errors_and_logs_hide_the_key(
    reply: Reply, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors after retries, their causes and every DEBUG log record omit the key."""
    caplog.set_level(logging.DEBUG)
    async with connected(timeout=5.0) as (server, client):
        server.on("GET", BATCH_PATH, reply)
        server.on("GET", BATCH_PATH + "/results", reply)
        with pytest.raises(AsyncBatchError) as info:
            await call(client)
    _no_key_anywhere(info.value)
    assert all(API_KEY not in record.getMessage() for record in caplog.records)
    assert all(API_KEY not in repr(record.args) for record in caplog.records)


@pytest.mark.anyio
async def test_retries_are_logged_at_debug_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each retry leaves a DEBUG record naming the failure, and none holds the key."""
    caplog.set_level(logging.DEBUG, logger="asyncbatch")
    async with connected() as (server, client):
        server.on(
            "GET", BATCH_PATH, error(503, "unavailable"), Reply(200, STATUS_BODIES["pending"])
        )
        await client.batches.retrieve(BATCH_ID)
    retries = [r for r in caplog.records if r.name == "asyncbatch"]
    assert len(retries) == 1
    assert "503" in retries[0].getMessage()
    assert all(API_KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_connection_errors_hide_the_key() -> None:
    """A refused connection's error chain omits the key."""
    url = f"http://127.0.0.1:{unused_port()}/v1.3"
    async with Client(api_key=API_KEY, base_url=url, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.batches.retrieve(BATCH_ID)
    _no_key_anywhere(info.value)
