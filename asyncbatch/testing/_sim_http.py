"""The simulator's HTTP face: an aiohttp.web application over a `SimulatedAccount`.

Routes sit under the real API's ``/v1.3`` prefix. One middleware does what
every endpoint shares, in the order a real gateway would: count the request,
check ``x-api-key`` (401), draw a fault, then run the endpoint and map a
`SimulatorError` to its JSON error body.
"""

from __future__ import annotations

import hmac
import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio
from aiohttp import web

from ._faults import STATUS_FAULTS, Fault, FaultInjector, FaultKind
from ._sim_account import DEFAULT_PAGE_LIMIT, SimulatedAccount
from ._sim_errors import SimulatorError, bad_request
from ._sim_validate import decode_body

API_PREFIX = "/v1.3"
ErrorStyle = Literal["nested", "flat"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Middleware(Protocol):
    """A new-style aiohttp middleware (the parameter names are part of aiohttp's type)."""

    def __call__(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]: ...


_ACCOUNT: web.AppKey[SimulatedAccount] = web.AppKey("account", SimulatedAccount)
# The fault drawn for the request being handled; a context variable rather than
# request storage because the handler runs in the middleware's task.
_FAULT: ContextVar[Fault | None] = ContextVar("asyncbatch_simulator_fault", default=None)
_STATUS_TEXT = {
    FaultKind.HTTP_500: ("internal_server_error", "An internal error occurred."),
    FaultKind.HTTP_503: ("service_unavailable", "The service is temporarily unavailable."),
    FaultKind.HTTP_504: ("gateway_timeout", "The request did not finish in time."),
}
_BAD_GATEWAY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"


@dataclass(slots=True)
class Counters:
    """Live counters the middleware updates."""

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorStats:
    """A snapshot of what the simulator has seen.

    ``requests`` counts requests per endpoint (``create``, ``list``,
    ``retrieve``, ``delete``, ``results``, ``cancel``), refused ones included;
    ``faults`` counts injected faults per `FaultKind` value; ``open_connections``
    is the number of client connections open right now.
    """

    requests: dict[str, int]
    faults: dict[str, int]
    open_connections: int

    @property
    def total_requests(self) -> int:
        """Requests to every endpoint together."""
        return sum(self.requests.values())


def build_app(
    account: SimulatedAccount,
    *,
    api_key: str,
    injector: FaultInjector,
    counters: Counters,
    gateway_errors: ErrorStyle,
) -> web.Application:
    """The application with the six batch endpoints under ``/v1.3``."""
    app = web.Application(
        middlewares=[_middleware(api_key, injector, counters, gateway_errors)],
        client_max_size=64 * 1024 * 1024,
    )
    app[_ACCOUNT] = account
    base = f"{API_PREFIX}/analyze/batches"
    app.router.add_post(base, _create, name="create")
    app.router.add_get(base, _list, name="list", allow_head=False)
    app.router.add_get(base + "/{batch_id}", _retrieve, name="retrieve", allow_head=False)
    app.router.add_delete(base + "/{batch_id}", _delete, name="delete")
    app.router.add_get(base + "/{batch_id}/results", _results, name="results", allow_head=False)
    app.router.add_post(base + "/{batch_id}/cancel", _cancel, name="cancel")
    return app


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    style: ErrorStyle = "nested",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error: ``{"error": {"code", "message"}}``, or flat ``{"code", "message"}``."""
    detail = {"code": code, "message": message}
    body = detail if style == "flat" else {"error": detail}
    return web.json_response(body, status=status, headers=headers)


def _middleware(
    api_key: str, injector: FaultInjector, counters: Counters, style: ErrorStyle
) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = request.match_info.route.name
        if endpoint is None:  # not one of ours: aiohttp's own 404/405
            return await handler(request)
        counters.requests[endpoint] += 1
        if not hmac.compare_digest(request.headers.get("x-api-key", ""), api_key):
            return error_response(
                401,
                "api_key_invalid",
                "API Key is either invalid or expired. Check it and try again.",
                style=style,
            )
        fault = injector.draw(endpoint)
        _FAULT.set(fault)
        if fault is not None:
            counters.faults[fault.kind] += 1
        if fault is not None and fault.kind in STATUS_FAULTS:
            return _status_fault(fault, style, request.app[_ACCOUNT])
        if fault is not None and fault.kind is FaultKind.LATENCY:
            await anyio.sleep(fault.delay)
        try:
            response = await handler(request)
        except SimulatorError as exc:
            return error_response(exc.status, exc.code, exc.message)
        return _spoil(request, response, fault)

    return middleware


def _status_fault(fault: Fault, style: ErrorStyle, account: SimulatedAccount) -> web.Response:
    if fault.kind is FaultKind.RATE_LIMIT:
        wait = max(1, math.ceil(fault.retry_after))
        reset = account.wall(account.now() + wait)
        headers = {
            "Retry-After": str(wait),
            "X-Ratelimit-Limit": "60",
            "X-Ratelimit-Remaining": "0",
            "X-Ratelimit-Used": "60",
        }
        message = (
            f"You have exceeded the rate limit (60req/1min). Please try again later after {reset}."
        )
        return error_response(429, "too_many_requests", message, style=style, headers=headers)
    if fault.kind is FaultKind.HTTP_502:
        return web.Response(status=502, body=_BAD_GATEWAY_PAGE, content_type="text/html")
    code, message = _STATUS_TEXT[fault.kind]
    return error_response(int(fault.kind), code, message)


def _spoil(
    request: web.Request, response: web.StreamResponse, fault: Fault | None
) -> web.StreamResponse:
    """Apply the faults that strike after the endpoint acted."""
    if fault is None or not isinstance(response, web.Response):
        return response
    if fault.kind is FaultKind.DROP:
        if request.transport is not None:
            request.transport.abort()  # close without answering; the action stands
        return response
    body = response.body
    if not isinstance(body, bytes):
        return response
    if fault.kind is FaultKind.TRUNCATE:
        response.body = body[: max(1, len(body) // 2)]
    elif fault.kind is FaultKind.MALFORMED:
        response.body = _malformed(body, response.content_type)
    return response


def _malformed(body: bytes, content_type: str) -> bytes:
    """A body no JSON parser accepts; in JSON Lines, one bad line after the first."""
    if content_type == "application/jsonl" and b"\n" in body:
        first, rest = body.split(b"\n", 1)
        return first + b"\n{not json\n" + rest
    return b"<html><body>upstream sent an invalid response</body></html>\n"


def _account(request: web.Request) -> SimulatedAccount:
    return request.app[_ACCOUNT]


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


async def _create(request: web.Request) -> web.Response:
    # Bytes, not request.json(): its text() decoding trusts the charset the client
    # names, and an unknown one would raise LookupError (a 500).
    body = decode_body(await request.read())
    return _json(_account(request).create(body), status=201)


async def _list(request: web.Request) -> web.Response:
    query = request.query
    body = _account(request).list_page(
        statuses=query.getall("status", []),
        modes=query.getall("analysis_mode", []),
        page=_int_param(query.get("page"), "page", 1),
        page_limit=_int_param(query.get("page_limit"), "page_limit", DEFAULT_PAGE_LIMIT),
        stale=_is_stale(),
    )
    return _json(body)


async def _retrieve(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    return _json(_account(request).retrieve(batch_id, stale=_is_stale()))


async def _delete(request: web.Request) -> web.Response:
    _account(request).delete(request.match_info["batch_id"])
    return web.Response(status=200)


async def _results(request: web.Request) -> web.Response:
    lines = _account(request).results(request.match_info["batch_id"])
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return web.Response(body=body, content_type="application/jsonl")


async def _cancel(request: web.Request) -> web.Response:
    return _json(_account(request).cancel(request.match_info["batch_id"]), status=202)


def _is_stale() -> bool:
    fault = _FAULT.get()
    return fault is not None and fault.kind is FaultKind.STALE


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer.") from None
