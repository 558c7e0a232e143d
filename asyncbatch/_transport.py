"""HTTP transport: the only module that imports the aiohttp client.

It owns one `aiohttp.ClientSession` (or borrows the caller's), adds the
``x-api-key`` header, bounds each request and each call in time, retries what
`_retry` says may be retried, and turns every failure into an asyncbatch error
at one boundary (`_ClientErrors`). It knows nothing of batches: callers get
bytes back and decode them.

Timeouts: ``timeout`` bounds one request (connect to last byte); a call's
``deadline`` (absolute, on the event loop clock) bounds the call with all its
retries and backoff sleeps. A results stream has no total bound, only a bound
on each wait for data (the headers, then every chunk), since a large batch
legitimately takes a while to download.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBatchError,
    ClientClosedError,
    ConfigurationError,
    DecodeError,
    RateLimitError,
    status_error_class,
)
from ._models import error_decoder
from ._retry import RetryPolicy, parse_retry_after, retry_delay, status_is_retryable
from ._version import __version__

logger = logging.getLogger("asyncbatch")

T = TypeVar("T")

Params = Sequence[tuple[str, str | int]]

MAX_BODY_BYTES = 16 * 1024 * 1024  # a status or list body is a few KiB; this stops a runaway one
_SNIPPET_BYTES = 200
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Redirects are not followed: aiohttp would resend the x-api-key header to
# whatever host the Location names. The API documents none, so a 3xx is an error.
_FIRST_ERROR_STATUS = 300


@dataclass(frozen=True, slots=True)
class Response:
    """A complete successful answer: status, headers (case-insensitive) and the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)
class _Failure(Exception):
    """One failed attempt: the error to raise, and whether a retry may help."""

    error: AsyncBatchError
    retryable: bool
    retry_after: float | None = None


def check_base_url(base_url: str, *, allow_insecure_http: bool) -> str:
    """The base URL without a trailing slash; refuses plain HTTP to remote hosts."""
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel in clear "
            "text; use https:// or pass allow_insecure_http=True"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Transport:
    """Sends requests to the API with auth, timeouts, retries and error mapping."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key.isprintable() or not api_key.isascii() or api_key != api_key.strip():
            # aiohttp would refuse the header on every request with a bare ValueError;
            # the usual cause is a key read from a file with its trailing newline.
            raise ConfigurationError(
                "the API key holds whitespace, control or non-ASCII characters"
            )
        self._headers = {
            "x-api-key": api_key,
            "accept": "application/json, application/jsonl",  # results are JSON Lines
            "user-agent": f"asyncbatch/{__version__}",
        }
        self._json_headers = {**self._headers, "content-type": "application/json"}
        self._base_url = base_url
        self._timeout = timeout
        self._default_timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Transport {self._base_url}>"

    @property
    def base_url(self) -> str:
        """The API root every path is appended to."""
        return self._base_url

    async def aclose(self) -> None:
        """Close the session if this transport made it. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def _client_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
        creates: bool = False,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
    ) -> Response:
        """Send a request until it succeeds, fails for good, or runs out of attempts or time.

        ``creates`` marks the non-idempotent create: it is retried only where
        the server cannot have acted. Raises an `AsyncBatchError` subclass.
        """
        url = self._base_url + path

        async def attempt() -> Response:
            timeout = (
                self._default_timeout
                if deadline is None
                else aiohttp.ClientTimeout(total=self._request_timeout(deadline))
            )
            with _ClientErrors(method, url, creates=creates):
                async with self._client_session().request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=self._headers if body is None else self._json_headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    payload = await _read_body(response, method, url)
                    status = response.status
                    headers = response.headers  # case-insensitive already
            if status >= _FIRST_ERROR_STATUS:
                raise _status_failure(status, headers, payload, method, url, creates=creates)
            return Response(status, headers, payload)

        return await self._with_retries(attempt, method, path, retry, deadline)

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, path: str, *, retry: RetryPolicy | None = None
    ) -> AsyncIterator[AsyncIterator[tuple[int, bytes]]]:
        """Open a GET whose body is JSON Lines; yields ``(line_number, line)`` pairs.

        Opening is retried like any GET; once lines flow, a broken stream raises
        `APIConnectionError` instead of restarting, which would repeat lines.
        Blank lines are skipped (their numbers still count), CR before LF is
        removed, and a last line without a newline is yielded too. The response
        is released when the ``async with`` exits, however it exits.
        """
        method, url = "GET", self._base_url + path
        # No total bound, but sock_read bounds the wait for the headers (and each
        # read): without it a server that never answers would hang us forever.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout, sock_read=self._timeout
        )
        timeout_between_chunks = self._timeout

        async def attempt() -> aiohttp.ClientResponse:
            with _ClientErrors(method, url, creates=False):
                response = await self._client_session().request(
                    method, url, headers=self._headers, timeout=timeout, allow_redirects=False
                )
                if response.status < _FIRST_ERROR_STATUS:
                    return response
                try:
                    payload = await _read_body(response, method, url)
                finally:
                    response.release()
            raise _status_failure(response.status, response.headers, payload, method, url)

        response = await self._with_retries(attempt, method, path, retry, None)
        lines = _lines(response, method, url, timeout_between_chunks)
        try:
            yield lines
        finally:
            await lines.aclose()
            response.release()

    def _request_timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self._timeout
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            raise APITimeoutError("the call's deadline passed")
        return min(self._timeout, remaining)

    async def _with_retries(
        self,
        attempt: Callable[[], Awaitable[T]],
        method: str,
        path: str,
        retry: RetryPolicy | None,
        deadline: float | None,
    ) -> T:
        policy = retry or self._retry
        for number in range(1, policy.max_attempts + 1):
            try:
                return await attempt()
            except _Failure as failure:
                delay = self._delay_before_retry(failure, policy, number, deadline)
                logger.debug(
                    "%s %s failed (%s); retry %d in %.2f s",
                    method,
                    path,
                    failure.error,
                    number,
                    delay,
                )
                await anyio.sleep(delay)
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _delay_before_retry(
        self, failure: _Failure, policy: RetryPolicy, number: int, deadline: float | None
    ) -> float:
        """The wait before the next attempt, or raises the failure's error when there is none."""
        if not failure.retryable or number >= policy.max_attempts:
            raise failure.error
        if failure.retry_after is not None and failure.retry_after > policy.max_retry_after:
            raise failure.error
        delay = retry_delay(policy, number, failure.retry_after, self._rng)
        if deadline is not None and anyio.current_time() + delay >= deadline:
            raise failure.error
        return delay


async def _read_body(response: aiohttp.ClientResponse, method: str, url: str) -> bytes:
    length = response.content_length
    if length is not None:
        # aiohttp reads no more than Content-Length: one check, then the fast path.
        if length > MAX_BODY_BYTES:
            raise _oversized(method, url, b"")
        return await response.read()
    body = bytearray()  # chunked: count what actually arrives
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _oversized(method, url, bytes(body[:_SNIPPET_BYTES]))
    return bytes(body)


def _oversized(method: str, url: str, snippet: bytes) -> DecodeError:
    return DecodeError(
        f"{method} {url}: body is over the {MAX_BODY_BYTES} byte limit", snippet=snippet
    )


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _status_failure(
    status: int,
    headers: Mapping[str, str],
    payload: bytes,
    method: str,
    url: str,
    *,
    creates: bool = False,
) -> _Failure:
    headers = _lower_headers(headers)
    code, message = _error_parts(payload)
    details = {
        "status": status,
        "code": code,
        "message": message,
        "headers": headers,
        "method": method,
        "url": url,
    }
    retry_after = parse_retry_after(headers)
    error: APIStatusError
    if status == 429:
        error = RateLimitError(**details, retry_after=retry_after)  # type: ignore[arg-type]
    else:
        error = status_error_class(status)(**details)  # type: ignore[arg-type]
    return _Failure(error, status_is_retryable(status, creates=creates), retry_after)


def _error_parts(payload: bytes) -> tuple[str | None, str | None]:
    """``(code, message)`` from a nested or flat error body; raw text when it is not JSON."""
    try:
        return error_decoder.decode(payload).parts()
    except ValueError:  # msgspec.DecodeError and ValidationError are ValueErrors
        text = payload[:_SNIPPET_BYTES].decode("utf-8", "replace").strip()
        return None, text or None


class _ClientErrors:
    """``with _ClientErrors(...)``: turns aiohttp and socket exceptions into `_Failure`s.

    A class rather than a generator-based context manager: it is entered on
    every request, and this costs a fraction of a microsecond.
    """

    __slots__ = ("_creates", "_method", "_url")

    def __init__(self, method: str, url: str, *, creates: bool) -> None:
        self._method = method
        self._url = url
        self._creates = creates

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, _Failure | AsyncBatchError):
            return
        failure = _map_failure(f"{self._method} {self._url}", exc, creates=self._creates)
        if failure is not None:
            raise failure from exc


def _map_failure(where: str, exc: BaseException, *, creates: bool) -> _Failure | None:
    """The `_Failure` for an aiohttp or socket exception; None for anything else."""
    if isinstance(exc, TimeoutError):
        # asyncio's and aiohttp's timeouts alike. The request may have reached the
        # server, so a create is not retried.
        return _failure(APITimeoutError(f"{where} timed out"), exc, not creates)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        message = f"{where}: TLS certificate rejected ({exc.certificate_error})"
        return _failure(APIConnectionError(message), exc, False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Connecting failed, so nothing was sent: safe to retry even a create.
        message = f"{where}: cannot connect ({exc.os_error})"
        return _failure(APIConnectionError(message), exc, True)
    if isinstance(exc, aiohttp.InvalidURL):
        return _failure(APIConnectionError(f"{where}: invalid URL"), exc, False)
    if isinstance(exc, aiohttp.ClientError | OSError):
        message = f"{where}: {type(exc).__name__}: {exc}"
        return _failure(APIConnectionError(message), exc, not creates)
    return None


def _failure(error: AsyncBatchError, cause: BaseException, retryable: bool) -> _Failure:
    error.__cause__ = cause
    return _Failure(error, retryable)


async def _lines(
    response: aiohttp.ClientResponse, method: str, url: str, timeout_between_chunks: float
) -> AsyncGenerator[tuple[int, bytes], None]:
    """Split a body into numbered lines without a line-length limit."""
    number = 0
    pending = b""
    chunks = response.content.iter_any()
    while True:
        chunk = await _next_chunk(chunks, method, url, timeout_between_chunks)
        if chunk is None:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            if line.strip():
                yield number, line.removesuffix(b"\r")
    if pending.strip():
        yield number + 1, pending.removesuffix(b"\r")


async def _next_chunk(
    chunks: AsyncIterator[bytes], method: str, url: str, timeout: float
) -> bytes | None:
    try:
        with anyio.fail_after(timeout):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError as exc:
        raise APITimeoutError(f"{method} {url}: no data for {timeout:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise APIConnectionError(f"{method} {url}: stream broke: {type(exc).__name__}") from exc
