"""HTTP transport: the only module that imports the aiohttp client.

It owns one `aiohttp.ClientSession` (or borrows the caller's), adds the
``x-api-key`` header, bounds each request and each call in time, retries what
`_retry` says may be retried, and turns every failure into an asyncbatch error
at one boundary (`_client_failure`). It knows nothing of batches: callers get
bytes back and decode them.

Timeouts: ``timeout`` bounds one request (connect to last byte); a call's
``deadline`` (absolute, on the event loop clock) bounds the call with all its
retries and backoff sleeps. A results stream has no total bound unless its
caller gives a deadline, since a large batch legitimately takes a while to
download; ``timeout`` still bounds each attempt to get its headers and each
wait for data.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import random
import re
import urllib.request
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio
from yarl import URL

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBatchError,
    ClientClosedError,
    ConfigurationError,
    DecodeError,
    EndpointNotFoundError,
    RateLimitError,
    status_error_class,
)
from ._models import SNIPPET_BYTES, decode_body, error_decoder
from ._redact import redact_url, redact_urls
from ._retry import RetryPolicy, parse_retry_after, retry_delay, status_is_retryable
from ._telemetry import Dispatch
from ._telemetry import current as installed_telemetry
from ._version import __version__

logger = logging.getLogger("asyncbatch")

T = TypeVar("T")

Params = Sequence[tuple[str, str | int]]

MAX_BODY_BYTES = 16 * 1024 * 1024  # a status or list body is a few KiB; this stops a runaway one
MAX_LINE_BYTES = MAX_BODY_BYTES
"""The longest results line kept; a longer one is reported, not decoded."""
_CONTENT_ENCODING = "Content-Encoding"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Redirects are not followed: aiohttp would resend the x-api-key header to
# whatever host the Location names. The API documents none, so a 3xx is an error.
_FIRST_ERROR_STATUS = 300
# Paths made of these characters need no quoting and hold no dot segment, so their
# URL can be built from the parsed base URL without parsing the whole string again.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_/-]*")
_URL_CACHE_SIZE = 1024  # parsed URLs kept per transport (about 300 bytes each)


class Response(NamedTuple):
    """A complete successful answer: status, headers (case-insensitive) and the body.

    A named tuple rather than a frozen dataclass: one is built per request, and
    a frozen dataclass sets each field through ``object.__setattr__``.
    """

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
        raise ConfigurationError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel in clear "
            "text; use https:// or pass allow_insecure_http=True"
        )
    return base_url.rstrip("/")


def env_proxy(base_url: str) -> dict[str, Any]:
    """The proxy for ``base_url`` named by ``$HTTPS_PROXY``/``$HTTP_PROXY`` and ``$NO_PROXY``.

    As httpx, requests and boto3 do, and decided once per client: aiohttp's
    ``trust_env`` would look the environment up again in a thread on every
    request. Loopback hosts are never proxied. Returns the request keywords:
    ``proxy``, and ``proxy_headers`` with the proxy URL's userinfo as Basic auth.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or _is_loopback(host) or urllib.request.proxy_bypass(host):
        return {}
    proxy_url = URL(proxy)
    if proxy_url.user is None:
        return {"proxy": proxy_url}
    credentials = f"{proxy_url.user}:{proxy_url.password or ''}".encode()
    auth = "Basic " + base64.b64encode(credentials).decode("ascii")
    return {"proxy": proxy_url.with_user(None), "proxy_headers": {"Proxy-Authorization": auth}}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_base(base_url: str) -> URL | None:
    """``base_url`` parsed, when paths can be appended to its parsed form (no query or
    fragment, which a path appended to the string would land in); else None."""
    try:
        base = URL(base_url)
    except ValueError:
        return None
    if base.raw_query_string or base.raw_fragment or not base.absolute:
        return None
    return base


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
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
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
        self._urls: dict[str, URL | str] = {}
        self._base = _plain_base(base_url)
        self._shown_url = redact_url(base_url)  # for messages and reprs: no password
        self._timeout = timeout
        self._default_timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry
        if trace_configs and session is not None:
            raise ConfigurationError(
                "trace_configs apply to the session the client makes: "
                "create your own session with them instead"
            )
        self._session = session
        self._owns_session = session is None
        self._trace_configs = list(trace_configs)
        # A borrowed session keeps its own proxy settings; ours honours the environment.
        self._proxy = env_proxy(base_url) if session is None else {}
        # Our own session carries the common headers itself, so that aiohttp need not
        # merge a dict into them on every request; a borrowed one gets them per request.
        self._get_headers = None if session is None else self._headers
        self._body_headers = (
            {"content-type": "application/json"} if session is None else self._json_headers
        )
        # The keywords of a plain GET (no params, no body, first attempt), built once.
        self._plain: dict[str, Any] = {"allow_redirects": False, **self._proxy}
        if self._get_headers is not None:
            self._plain["headers"] = self._get_headers
        self._rng = rng or random.Random()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Transport {self._shown_url}>"

    @property
    def base_url(self) -> str:
        """The API root every path is appended to, any password in it shown as ``***``."""
        return self._shown_url

    async def aclose(self) -> None:
        """Close the session if this transport made it. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    def abandon(self) -> bool:
        """Drop an owned session left open, without awaiting (the client is being collected).

        Closes its pooled connections at once instead of leaving aiohttp to print its
        unclosed-session warnings; the caller warns in its own words. True when one was open.
        """
        self._closed = True
        session, self._session = self._session, None
        if session is None or not self._owns_session or session.closed:
            return False
        connector = session.connector
        session.detach()  # the session now counts as closed: aiohttp has nothing to warn of
        if connector is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                connector._close(abort_ssl=True)
        return True

    def _client_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, trace_configs=self._session_trace_configs()
            )
        return self._session

    def _session_trace_configs(self) -> list[aiohttp.TraceConfig] | None:
        if not self._trace_configs:
            return None
        # Imported here: only a client given trace configs pays for the span details.
        from ._telemetry_otel import url_template_trace_config  # noqa: PLC0415

        return [*self._trace_configs, url_template_trace_config()]

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
        # The attempt is written inline rather than as a coroutine handed to
        # `_with_retries`: every poll goes through here, and each coroutine layer
        # costs its creation plus a pass on every resume.
        url, shown = self._url(path), self._shown_url + path
        policy = retry or self._retry
        number = 1
        while True:
            telemetry = installed_telemetry.dispatch  # None unless hooks are installed
            started = anyio.current_time() if telemetry is not None else 0.0
            timeout = (
                self._default_timeout
                if deadline is None
                else aiohttp.ClientTimeout(total=self._request_timeout(deadline))
            )
            kwargs = (
                self._plain
                if params is None and body is None and number == 1
                else self._keywords(params, body, number)
            )
            try:
                async with self._client_session().request(
                    method, url, timeout=timeout, **kwargs
                ) as response:
                    headers = response.headers  # case-insensitive already
                    if _CONTENT_ENCODING in headers or not _fits(response.content_length):
                        payload = await _read_body(response, method, shown)
                    else:  # the usual answer, whole in Content-Length bytes: no coroutine more
                        payload = await response.read()  # aiohttp reads no more than that
                    status = response.status
            except Exception as exc:  # mapped, or raised again, just below
                failure = _client_failure(exc, method, shown, creates=creates)
            else:
                if status < _FIRST_ERROR_STATUS:
                    if telemetry is not None:
                        telemetry.request(method, path, None, anyio.current_time() - started)
                    return Response(status, headers, payload)
                failure = _status_failure(status, headers, payload, method, shown, creates=creates)
            await self._pause_before_retry(
                failure,
                number,
                method=method,
                path=path,
                policy=policy,
                deadline=deadline,
                telemetry=telemetry,
                started=started,
            )
            number += 1

    def _url(self, path: str) -> URL | str:
        """The URL of ``path``, parsed once: yarl's own cache of parsed strings holds only
        128, fewer than the batches a watcher polls, and parsing one costs microseconds."""
        url = self._urls.get(path)
        if url is None:
            if self._base is not None and _PLAIN_PATH.fullmatch(path):
                url = self._base.with_path(self._base.raw_path.rstrip("/") + path, encoded=True)
            else:
                url = self._base_url + path  # aiohttp parses it
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        return url

    def _keywords(self, params: Params | None, body: bytes | None, number: int) -> dict[str, Any]:
        """The request keywords besides method, URL and timeout."""
        kwargs: dict[str, Any] = {"allow_redirects": False, **self._proxy}
        headers = self._get_headers if body is None else self._body_headers
        if headers is not None:
            kwargs["headers"] = headers
        if params is not None:
            kwargs["params"] = params
        if body is not None:
            kwargs["data"] = body
        if number > 1:
            kwargs["trace_request_ctx"] = _resend(number)
        return kwargs

    @contextlib.asynccontextmanager
    async def stream_lines(
        self, path: str, *, retry: RetryPolicy | None = None, deadline: float | None = None
    ) -> AsyncIterator[AsyncIterator[Line]]:
        """Open a GET whose body is JSON Lines; yields `Line` tuples (see `LineSplitter`).

        Opening is retried like any GET, and each attempt must get its headers
        within the client's ``timeout`` (a server that trickles them byte by
        byte is cut off). Once lines flow, every wait for data is bounded by
        that ``timeout`` too, and a broken stream raises `APIConnectionError`
        instead of restarting, which would repeat lines. ``deadline`` (on the
        event loop clock) bounds everything, opening to the last line. A last
        line without a newline is yielded too. The response is released when
        the ``async with`` exits, however it exits.
        """
        method, url, shown = "GET", self._base_url + path, self._shown_url + path
        # No total bound from aiohttp (it would cover the whole body): sock_read bounds
        # each read, and fail_after below the whole wait for the headers.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout, sock_read=self._timeout
        )

        async def attempt(number: int) -> aiohttp.ClientResponse:
            try:
                with anyio.fail_after(self._request_timeout(deadline)):
                    response = await self._client_session().request(
                        method,
                        url,
                        headers=self._get_headers,
                        timeout=timeout,
                        allow_redirects=False,
                        trace_request_ctx=_resend(number),
                        **self._proxy,
                    )
                if response.status < _FIRST_ERROR_STATUS:
                    return response
                try:
                    with anyio.fail_after(self._request_timeout(deadline)):
                        payload = await _read_body(response, method, shown)
                finally:
                    response.release()
            except Exception as exc:
                raise _client_failure(exc, method, shown, creates=False) from exc
            raise _status_failure(response.status, response.headers, payload, method, shown)

        response = await self._with_retries(attempt, method, path, retry, deadline)
        lines = _lines(response, method, shown, _ChunkWait(self._timeout, deadline))
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
        attempt: Callable[[int], Awaitable[T]],
        method: str,
        path: str,
        retry: RetryPolicy | None,
        deadline: float | None,
    ) -> T:
        policy = retry or self._retry
        for number in range(1, policy.max_attempts + 1):
            telemetry = installed_telemetry.dispatch  # None unless hooks are installed
            started = anyio.current_time() if telemetry is not None else 0.0
            try:
                result = await attempt(number)
            except _Failure as caught:
                failure = caught
            else:
                if telemetry is not None:
                    telemetry.request(method, path, None, anyio.current_time() - started)
                return result
            # Handled outside the ``except``: the error raised must not carry the private
            # `_Failure` as its ``__context__`` ("During handling of the above exception...").
            await self._pause_before_retry(
                failure,
                number,
                method=method,
                path=path,
                policy=policy,
                deadline=deadline,
                telemetry=telemetry,
                started=started,
            )
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def _pause_before_retry(
        self,
        failure: _Failure,
        number: int,
        *,
        method: str,
        path: str,
        policy: RetryPolicy,
        deadline: float | None,
        telemetry: Dispatch | None,
        started: float,
    ) -> None:
        """Report attempt ``number``'s failure, then sleep until the next attempt, or raise
        the failure's error when there is none."""
        if telemetry is not None:
            telemetry.request(method, path, failure.error, anyio.current_time() - started)
        delay = self._delay_before_retry(failure, policy, number, deadline)
        if telemetry is not None:
            telemetry.retry(path, failure.error, delay)
        logger.debug(
            "%s %s failed (%s); retry %d in %.2f s",
            method,
            path,
            failure.error,
            number,
            delay,
        )
        await anyio.sleep(delay)

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


def _resend(number: int) -> dict[str, int] | None:
    """The ``trace_request_ctx`` of attempt ``number``: trace configs see resends counted."""
    return None if number == 1 else {"http.request.resend_count": number - 1}


async def _read_body(response: aiohttp.ClientResponse, method: str, url: str) -> bytes:
    """The whole body, refused once it passes `MAX_BODY_BYTES` *as decoded*.

    aiohttp undoes ``Content-Encoding`` (gzip, deflate, ...) as it reads, so a
    ``Content-Length`` bounds only the bytes on the wire: 1 MB of gzip can hold
    gigabytes. Such a body is counted as it is decompressed, chunk by chunk.
    """
    length = response.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise _oversized(method, url, b"")  # too big even before decompression
    if length is not None and _CONTENT_ENCODING not in response.headers:
        return await response.read()  # aiohttp reads no more than Content-Length
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _oversized(method, url, bytes(body[:SNIPPET_BYTES]))
    return bytes(body)


def _fits(length: int | None) -> bool:
    """Whether a ``Content-Length`` (None: absent) says the body is within the limit."""
    return length is not None and length <= MAX_BODY_BYTES


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
    elif status == 404 and code is None:
        # The API's own 404 carries an error code; a bare one comes from
        # whatever else answers at this URL, so it says nothing about the batch.
        error = EndpointNotFoundError(**details)  # type: ignore[arg-type]
    else:
        error = status_error_class(status)(**details)  # type: ignore[arg-type]
    return _Failure(error, status_is_retryable(status, creates=creates), retry_after)


def _error_parts(payload: bytes) -> tuple[str | None, str | None]:
    """``(code, message)`` from a nested or flat error body; raw text when it is not JSON."""
    try:
        return decode_body(error_decoder, payload, "error body").parts()
    except DecodeError:
        text = payload[:SNIPPET_BYTES].decode("utf-8", "replace").strip()
        return None, text or None


def _client_failure(exc: Exception, method: str, url: str, *, creates: bool) -> _Failure:
    """The `_Failure` for an aiohttp or socket exception (the one place where they become
    ours); anything else (our own errors included) is raised again, unchanged."""
    if isinstance(exc, _Failure | AsyncBatchError):
        raise exc
    failure = _map_failure(f"{method} {url}", exc, creates=creates)
    if failure is None:
        raise exc
    return failure


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
        message = f"{where}: {type(exc).__name__}: {redact_urls(str(exc))}"
        return _failure(APIConnectionError(message), exc, not creates)
    return None


def _failure(error: AsyncBatchError, cause: BaseException, retryable: bool) -> _Failure:
    # aiohttp's own message may quote the URL, password and all (InvalidURL does):
    # such a cause is left out of the chain rather than shown in a traceback.
    text = str(cause)
    if redact_urls(text) == text:
        error.__cause__ = cause
    else:
        error.__suppress_context__ = True
    return _Failure(error, retryable)


Line = tuple[int, bytes, bool]
"""A results line: its 1-based number, its bytes, and whether it was over `MAX_LINE_BYTES`
(then the bytes are only its start)."""


class LineSplitter:
    """Splits a byte stream into numbered lines, in time linear in the bytes fed (sans-IO).

    Blank lines are skipped (their numbers still count) and a CR before LF is
    removed. A line longer than ``max_line`` is not kept whole: its first bytes
    come out flagged as oversized, the rest is dropped up to its newline, and
    splitting goes on with the next line. Memory stays under ``max_line`` plus
    one chunk.
    """

    __slots__ = ("_buffer", "_dropped", "_max_line", "_number", "_scanned")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # the buffer's first bytes already searched: they hold no newline
        self._number = 0
        self._dropped: bytes | None = None  # the start of an oversized line being skipped
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[Line]:
        """The lines that ``chunk`` completes."""
        lines: list[Line] = []
        buffer = self._buffer
        buffer += chunk
        start = 0
        # Each byte is searched once: a partial line is never rescanned.
        while (end := buffer.find(b"\n", max(start, self._scanned))) >= 0:
            self._complete(buffer[start:end], lines)
            start = end + 1
        del buffer[:start]  # from the front: CPython moves a pointer, it does not copy
        self._scanned = len(buffer)
        if len(buffer) > self._max_line:
            if self._dropped is None:
                self._dropped = bytes(buffer[:SNIPPET_BYTES])
            buffer.clear()
            self._scanned = 0
        return lines

    def finish(self) -> list[Line]:
        """The last line, when the stream did not end with a newline."""
        lines: list[Line] = []
        if self._buffer.strip() or self._dropped is not None:
            self._complete(self._buffer, lines)
        self._buffer = bytearray()
        self._scanned = 0
        return lines

    def _complete(self, line: bytearray, lines: list[Line]) -> None:
        self._number += 1
        if self._dropped is not None or len(line) > self._max_line:
            start = self._dropped if self._dropped is not None else bytes(line[:SNIPPET_BYTES])
            lines.append((self._number, start, True))
            self._dropped = None
        elif line.strip():
            lines.append((self._number, bytes(line).removesuffix(b"\r"), False))


@dataclass(frozen=True, slots=True)
class _ChunkWait:
    """How long a stream may wait for its next chunk: ``timeout``, cut short by ``deadline``."""

    timeout: float
    deadline: float | None

    def seconds(self, where: str) -> float:
        if self.deadline is None:
            return self.timeout
        remaining = self.deadline - anyio.current_time()
        if remaining <= 0:
            raise APITimeoutError(f"{where}: the call's deadline passed")
        return min(self.timeout, remaining)


async def _lines(
    response: aiohttp.ClientResponse, method: str, url: str, wait: _ChunkWait
) -> AsyncGenerator[Line, None]:
    """The body's lines as `LineSplitter` splits them, chunk by chunk as they arrive."""
    splitter = LineSplitter()
    chunks = response.content.iter_any()
    while (chunk := await _next_chunk(chunks, f"{method} {url}", wait)) is not None:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.finish():
        yield line


async def _next_chunk(chunks: AsyncIterator[bytes], where: str, wait: _ChunkWait) -> bytes | None:
    seconds = wait.seconds(where)
    try:
        with anyio.fail_after(seconds):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError as exc:
        raise APITimeoutError(f"{where}: no data for {seconds:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise APIConnectionError(f"{where}: stream broke: {type(exc).__name__}") from exc
