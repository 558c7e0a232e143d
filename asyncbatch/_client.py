"""`Client` and its ``batches`` resource: one method per batch endpoint.

Every method validates its arguments before any request (a batch ID must be 24
hex digits), sends through the `Transport` (auth, timeouts, retries, error
mapping), and decodes the answer with msgspec into the structs of `_models`.
Each accepts ``timeout`` (seconds for the whole call, retries included) and
``retry`` (a `RetryPolicy` for this call only).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import aiohttp
import anyio
import msgspec
from anyio.abc import AsyncResource

from ._errors import (
    ConfigurationError,
    DecodeError,
    InvalidRequestError,
)
from ._jobs import Jobs
from ._models import (
    BATCH_ID_PATTERN,
    Batch,
    BatchDefaults,
    BatchItemRequest,
    CreateBatchRequest,
    CreatedBatch,
    PageInfo,
    batch_decoder,
    check_batch_id,
    check_not_a_string,
    created_decoder,
    decode_body,
    encoder,
    page_decoder,
    result_decoder,
)
from ._results import ResultStream
from ._retry import RetryPolicy
from ._transport import Params, Transport, check_base_url
from ._wait import check_watch_options, wait_for_batch
from ._watcher import Watcher, WatchOptions

DEFAULT_BASE_URL = "https://api.twelvelabs.io/v1.3"
API_KEY_ENV_VARS = ("TWELVELABS_API_KEY", "TWELVE_LABS_API_KEY")
BASE_URL_ENV_VAR = "TWELVELABS_BASE_URL"
MAX_PAGE_LIMIT = 50

_T = TypeVar("_T")


class Client(AsyncResource):
    """An async client for the TwelveLabs batch-analysis API.

    Use it as ``async with Client() as client:``, or call `aclose` yourself.

    Args:
        api_key: falls back to ``$TWELVELABS_API_KEY``, then ``$TWELVE_LABS_API_KEY``.
        base_url: falls back to ``$TWELVELABS_BASE_URL``, then the public API.
            Plain ``http://`` is accepted only for loopback hosts unless
            ``allow_insecure_http`` is true.
        timeout: seconds one request may take, connect to last byte.
        retry: the default `RetryPolicy` of every call.
        session: an `aiohttp.ClientSession` to borrow; the client then leaves
            closing it to you. Without one, ``$HTTPS_PROXY``, ``$HTTP_PROXY``
            and ``$NO_PROXY`` apply (read once, here), as in httpx, requests
            and boto3; loopback hosts are never proxied.
        trace_configs: `aiohttp.TraceConfig` objects for the session the client makes, such as
            OpenTelemetry's (``create_trace_config()`` of
            ``opentelemetry-instrumentation-aiohttp-client``); the client adds
            `url_template_trace_config` beside them, which names the spans by URL
            template. With ``session``, give them to your session instead.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        key = _first_env(API_KEY_ENV_VARS) if api_key is None else api_key
        if not key:
            raise ConfigurationError("no API key: pass api_key= or set $TWELVELABS_API_KEY")
        url = base_url or os.environ.get(BASE_URL_ENV_VAR) or DEFAULT_BASE_URL
        self._transport = Transport(
            api_key=key,
            base_url=check_base_url(url, allow_insecure_http=allow_insecure_http),
            timeout=timeout,
            retry=retry or RetryPolicy(),
            session=session,
            trace_configs=trace_configs,
        )
        self.batches = Batches(self._transport)
        self.jobs = Jobs(self)

    def __del__(self, _warnings: Any = warnings) -> None:
        # Collected without `close()`: say so in our words (aiohttp would print two
        # "Unclosed ..." reports through the event loop's exception handler instead).
        transport = getattr(self, "_transport", None)  # None if __init__ raised
        if transport is not None and transport.abandon():
            _warnings.warn(
                "an asyncbatch.Client was never closed: use `async with Client() as client:` "
                "or `await client.aclose()`",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    def __repr__(self) -> str:
        return f"<asyncbatch.Client base_url={self._transport.base_url!r}>"

    @property
    def base_url(self) -> str:
        """The API root the client talks to."""
        return self._transport.base_url

    async def aclose(self) -> None:
        """Close the connection pool (unless it was borrowed). Idempotent."""
        await self._transport.aclose()

    def watch(self, batch_ids: Iterable[str] = (), **options: Unpack[WatchOptions]) -> Watcher:
        """A `Watcher` over ``batch_ids``; see `Watcher` for the options (`WatchOptions`).

        ``batch_ids`` is a list (any iterable) of IDs: a single ID as a bare
        string raises `TypeError`.
        """
        return Watcher(self, batch_ids, **options)


def _first_env(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class Batches:
    """The ``/analyze/batches`` endpoints, reached as ``client.batches``."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def __repr__(self) -> str:
        return f"<asyncbatch.Batches base_url={self._transport.base_url!r}>"

    async def retrieve(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> Batch:
        """The batch's current status and item counters."""
        path = f"/analyze/batches/{check_batch_id(batch_id)}"
        deadline = None if timeout is None else anyio.current_time() + timeout
        response = await self._transport.request("GET", path, retry=retry, deadline=deadline)
        return _same_batch(batch_id, response.body, "GET", path)

    async def list(
        self,
        *,
        status: Iterable[str] | None = None,
        analysis_mode: Iterable[str] | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """Every batch of the account, newest first, fetched a page at a time as you iterate.

        ``status`` and ``analysis_mode`` filter (several values are OR-ed); each
        is a list, and a bare string raises `TypeError`.
        Paging stops at ``page_info.total_page`` without asking for an empty
        page past it; when ``page_info`` is missing or lies, it stops at the
        first empty or short page, when the server answers a page other than
        the one asked for, or at a page with no batch not yielded before. A
        batch shown twice (by a shift between pages, or within one page) is
        yielded once.
        ``timeout`` bounds each page. Arguments are checked when iteration
        starts, before any request.
        """
        check_not_a_string(status, "status")
        check_not_a_string(analysis_mode, "analysis_mode")
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be 1 to {MAX_PAGE_LIMIT}, got {page_limit}")
        filters = [("status", s) for s in status or ()]
        filters += [("analysis_mode", m) for m in analysis_mode or ()]
        seen: set[str] = set()
        page = 1
        while True:
            params: Params = [("page", page), ("page_limit", page_limit), *filters]
            response = await self._transport.request(
                "GET", "/analyze/batches", params=params, retry=retry, deadline=_deadline(timeout)
            )
            result = decode_body(page_decoder, response.body, f"GET /analyze/batches page {page}")
            fresh = _unseen(result.data, seen)
            for batch in fresh:
                yield batch
            # A page of nothing new means the server ignores ``page`` (or clamps it
            # without saying so): asking further would loop forever.
            if not fresh or _is_last_page(page, len(result.data), page_limit, result.page_info):
                return
            page += 1

    async def create(
        self,
        requests: Iterable[BatchItemRequest | Mapping[str, Any]],
        *,
        model_name: str = "pegasus1.5",
        analysis_mode: str = "general",
        defaults: BatchDefaults | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> CreatedBatch:
        """Create a batch of 1 to 1,000 requests; plain dicts or request structs.

        The request is checked before sending (`InvalidRequestError`). It is
        retried only on answers that prove no batch was made (429, 503, or a
        connection that never opened), so a retry never creates a twin.
        """
        check_not_a_string(requests, "requests")
        request = _build_create_request(requests, model_name, analysis_mode, defaults)
        try:
            body = encoder.encode(request)
        except (TypeError, msgspec.EncodeError) as exc:
            # A free-form JSON field (json_schema, segment_definitions) held a non-JSON value.
            raise InvalidRequestError(f"invalid batch request: {exc}") from None
        response = await self._transport.request(
            "POST",
            "/analyze/batches",
            body=body,
            creates=True,
            retry=retry,
            deadline=_deadline(timeout),
        )
        return decode_body(created_decoder, response.body, "POST /analyze/batches")

    async def cancel(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> Batch:
        """Ask to cancel; answers the batch as it was then (usually ``canceling``).

        Queued items are canceled and processing ones finish; the batch becomes
        ``canceled`` later. A terminal batch raises `ConflictError` whose
        ``code`` is ``batch_completed``, ``batch_canceled`` or ``batch_expired``.
        """
        path = f"/analyze/batches/{check_batch_id(batch_id)}/cancel"
        response = await self._transport.request(
            "POST", path, retry=retry, deadline=_deadline(timeout)
        )
        return _same_batch(batch_id, response.body, "POST", path)

    async def delete(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> None:
        """Delete a terminal batch and its tasks; a running one raises `ConflictError`."""
        path = f"/analyze/batches/{check_batch_id(batch_id)}"
        await self._transport.request("DELETE", path, retry=retry, deadline=_deadline(timeout))

    def results(
        self, batch_id: str, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> ResultStream:
        """Stream the batch's results, one `ResultItem` per item, decoded as lines arrive.

        Use ``async with client.batches.results(id) as items: async for item in
        items:`` to release the connection whatever happens, or a plain
        ``async for`` that runs to the end. A line that breaks the schema
        raises `DecodeError` naming its line number; nothing is skipped
        silently.

        ``timeout`` bounds the whole download, from opening the stream (retries
        included) to the last line, and raises `APITimeoutError` when it runs
        out. Without it a large batch may take as long as it needs, but the
        client's ``timeout`` still bounds each attempt to open the stream (a
        server that trickles its headers is cut off) and each wait for data.
        """
        path = f"/analyze/batches/{check_batch_id(batch_id)}/results"
        return ResultStream(self._transport, path, result_decoder, retry=retry, timeout=timeout)

    async def wait(self, batch_id: str, **options: Unpack[WatchOptions]) -> Batch:
        """Wait until the batch is terminal and return that snapshot.

        Polls through a `Watcher` (``options`` are its options, `WatchOptions`,
        e.g. ``timeout`` or ``min_interval``), so rate limits and retries behave the same. Raises
        `NotFoundError` when the batch does not exist, `WaitTimeoutError` when
        ``timeout`` seconds pass first, and the cause (e.g.
        `AuthenticationError`) when polling cannot go on. ``completed`` is
        returned too when items failed: check ``failed_items``. Cancelling the
        caller stops polling; the batch itself runs on.
        """
        return await wait_for_batch(self, batch_id, **options)

    async def create_and_wait(
        self,
        requests: Iterable[BatchItemRequest | Mapping[str, Any]],
        *,
        model_name: str = "pegasus1.5",
        analysis_mode: str = "general",
        defaults: BatchDefaults | Mapping[str, Any] | None = None,
        **options: Unpack[WatchOptions],
    ) -> Batch:
        """`create` a batch, then `wait` for it with ``options``; ``timeout`` covers both."""
        check_watch_options(self, options)
        timeout = options.get("timeout")
        deadline = _deadline(timeout)
        created = await self.create(
            requests,
            model_name=model_name,
            analysis_mode=analysis_mode,
            defaults=defaults,
            timeout=timeout,
        )
        remaining = None if deadline is None else max(0.0, deadline - anyio.current_time())
        if not BATCH_ID_PATTERN.fullmatch(created.batch_id):
            # The batch exists (and is billed) but its ID cannot be polled safely:
            # report it, with the ID, as the server's fault, not the caller's.
            raise DecodeError(
                "POST /analyze/batches created a batch whose ID is not 24 hex digits",
                snippet=created.batch_id.encode()[:200],
            )
        options["timeout"] = remaining
        return await self.wait(created.batch_id, **options)


def _same_batch(batch_id: str, body: bytes, method: str, path: str) -> Batch:
    """Decode a batch object and check that it is the batch that was asked for (hex digits
    in either case: the same ID)."""
    try:
        batch = batch_decoder.decode(body)
    except Exception:  # any decoder failure is a bad body: `decode_body` reports it
        batch = decode_body(batch_decoder, body, f"{method} {path}")
    answered = batch.batch_id
    if answered != batch_id and answered.lower() != batch_id.lower():
        raise DecodeError(f"{method} {path}: answered batch {answered!r}", snippet=body[:200])
    return batch


def _unseen(batches: Iterable[Batch], seen: set[str]) -> list[Batch]:
    """The batches whose IDs are not in ``seen``, each once, in order; adds them to ``seen``."""
    fresh = []
    for batch in batches:
        if batch.batch_id not in seen:
            seen.add(batch.batch_id)
            fresh.append(batch)
    return fresh


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else anyio.current_time() + timeout


def _is_last_page(page: int, count: int, page_limit: int, info: PageInfo) -> bool:
    if count == 0:
        return True
    if info.page is not None and info.page != page:
        return True  # the server clamped the page number: going on would loop
    if info.total_page is not None:
        return page >= info.total_page
    return count < page_limit


def _build_create_request(
    requests: Iterable[BatchItemRequest | Mapping[str, Any]],
    model_name: str,
    analysis_mode: str,
    defaults: BatchDefaults | Mapping[str, Any] | None,
) -> CreateBatchRequest:
    raw: dict[str, object] = {
        "model_name": model_name,
        "analysis_mode": analysis_mode,
        "requests": [_as_builtins(r) for r in requests],
    }
    if defaults is not None:
        raw["defaults"] = _as_builtins(defaults)
    try:
        request = msgspec.convert(raw, CreateBatchRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid batch request: {exc}") from None
    counts = Counter(r.custom_id for r in request.requests if r.custom_id is not None)
    duplicates = sorted(custom_id for custom_id, count in counts.items() if count > 1)
    if duplicates:
        raise InvalidRequestError(f"custom_id values must be unique, repeated: {duplicates}")
    return request


def _as_builtins(value: object) -> object:
    return msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
