"""A loopback API server that tells the truth only when it wants to, for the chaos test.

Each batch has a true timeline: the bodies the real API would answer, each from
a moment of (virtual) time on, ending in a terminal status. A test hands the
server a script of `Fault`s; each request takes the next one and is answered
accordingly (a stale snapshot, another batch's object, an error status with any
``Retry-After``, a body that does not decode, a lying or endless list page, a
slow answer). When the script runs out the server tells the truth, so every
batch can still end, and a watcher's final events can be checked against it.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import anyio
from aiohttp import web
from hypothesis import strategies as st

PREFIX = "/v1.3"
CREATED = datetime(2026, 7, 20, 10, 0, tzinfo=UTC)
TERMINAL = frozenset({"completed", "canceled", "expired"})
ACTIVE = frozenset({"pending", "processing", "canceling"})


@dataclass(frozen=True)
class Fault:
    """How ``repeat`` requests in a row are answered: ``kind``, and a number whose use
    depends on it."""

    kind: str
    arg: int = 0
    retry_after: str | None = None
    repeat: int = 1


@dataclass
class TrueBatch:
    """A batch's true history: ``(since, body)`` pairs in time order, the last terminal."""

    batch_id: str
    timeline: list[tuple[float, dict[str, Any]]]

    def history(self, now: float) -> list[dict[str, Any]]:
        """Every body true at some moment up to ``now`` (at least the first)."""
        past = [body for since, body in self.timeline if since <= now]
        return past or [self.timeline[0][1]]

    def truth(self, now: float) -> dict[str, Any]:
        """The body true at ``now``."""
        return self.history(now)[-1]

    @property
    def final(self) -> dict[str, Any]:
        """The terminal body it ends with."""
        return self.timeline[-1][1]


def _body(batch_id: str, status: str, counters: Sequence[int], ended: float) -> dict[str, Any]:
    queued, processing, ready, failed, canceled = counters
    body: dict[str, Any] = {
        "batch_id": batch_id,
        "status": status,
        "analysis_mode": "general",
        "model_name": "pegasus1.5",
        "total_items": sum(counters),
        "created_at": CREATED.isoformat(),
        "expires_at": (CREATED + timedelta(hours=24)).isoformat(),
        "queued_items": queued,
        "processing_items": processing,
        "ready_items": ready,
        "failed_items": failed,
        "canceled_items": canceled,
    }
    stamp_field = {"completed": "completed_at", "canceled": "canceled_at", "expired": "expired_at"}
    if status in stamp_field:
        body[stamp_field[status]] = (CREATED + timedelta(seconds=ended)).isoformat()
    return body


@st.composite
def true_batches(draw: st.DrawFn, batch_id: str) -> TrueBatch:
    """A plausible life: items go queued -> processing -> ready/failed one by one, and the
    batch completes, or is canceled midway, or expires midway."""
    total = draw(st.integers(1, 4))
    ending = draw(st.sampled_from(["completed", "canceled", "expired"]))
    stop_after = draw(st.integers(0, total - 1)) if ending != "completed" else total
    counters = [total, 0, 0, 0, 0]
    now = draw(st.floats(0.0, 30.0))
    timeline = [(now, _body(batch_id, "pending", counters, now))]

    def step(status: str) -> None:
        nonlocal now
        now += draw(st.floats(0.5, 40.0))
        timeline.append((now, _body(batch_id, status, counters, now)))

    for _ in range(stop_after):
        counters[0] -= 1
        counters[1] += 1
        step("processing")
        counters[1] -= 1
        counters[2 if draw(st.booleans()) else 3] += 1
        step("processing")
    if ending == "canceled":
        counters[4] += counters[0]
        counters[0] = 0
        step("canceling")
    elif ending == "expired":
        counters[4] += counters[0] + counters[1]
        counters[0] = counters[1] = 0
    step(ending)
    return TrueBatch(batch_id, timeline)


RETRY_AFTERS = [None, "0", "-5", "1", "7", "30", "garbage", "Mon, 20 Jul 2020 10:00:00 GMT"]

faults = st.one_of(
    st.just(Fault("truth")),
    st.builds(Fault, st.just("stale"), st.integers(0, 20)),
    st.builds(Fault, st.just("other"), st.integers(0, 20)),
    st.builds(
        Fault,
        st.just("status"),
        st.sampled_from([302, 400, 408, 409, 422, 429, 429, 500, 502, 503, 504]),
        st.sampled_from(RETRY_AFTERS),
        st.integers(1, 40),
    ),
    st.builds(Fault, st.just("garbage"), st.integers(0, 3)),
    st.builds(Fault, st.just("glitch"), st.integers(0, 3)),
    st.builds(Fault, st.just("slow"), st.integers(1, 90)),
    st.builds(Fault, st.just("list_stale"), st.integers(0, 20), st.none(), st.integers(1, 40)),
    st.builds(Fault, st.just("list_missing"), st.integers(0, 20)),
    st.builds(Fault, st.just("list_endless"), st.integers(0, 20)),
)

_GARBAGE = [b"", b"<html>oops</html>", b'{"batch_id": "', b"[" * 5000 + b"]" * 5000]


@dataclass
class ChaosServer:
    """``async with ChaosServer(batches, script) as server:``; ``server.url`` is the base URL."""

    batches: list[TrueBatch]
    script: list[Fault]
    list_lies_forever: bool = False
    """Once the script is played, the list keeps answering old snapshots (GETs are true)."""
    request_times: list[float] = field(default_factory=list)
    played_at: float = math.inf
    """When the script ran out: from then on the server tells the truth."""

    def __post_init__(self) -> None:
        if not self.script:
            self.played_at = 0.0

    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get(PREFIX + "/analyze/batches", self._list)
        app.router.add_get(PREFIX + "/analyze/batches/{batch_id}", self._retrieve)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}{PREFIX}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _next_fault(self, *, listing: bool = False) -> Fault:
        self.request_times.append(anyio.current_time())
        if not self.script:
            return Fault("list_stale") if listing and self.list_lies_forever else Fault("truth")
        fault = self.script[0]
        if fault.repeat > 1:
            self.script[0] = replace(fault, repeat=fault.repeat - 1)
        else:
            self.script.pop(0)
            if not self.script:
                self.played_at = anyio.current_time()
        return fault

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        fault, now = self._next_fault(), anyio.current_time()
        wanted = request.match_info["batch_id"]
        batch = next((b for b in self.batches if b.batch_id == wanted), None)
        if batch is None:
            return _json(404, {"error": {"code": "resource_not_exist", "message": "no batch"}})
        if fault.kind == "stale":
            history = batch.history(now)
            return _json(200, history[fault.arg % len(history)])
        if fault.kind == "other" and len(self.batches) > 1:
            others = [b for b in self.batches if b is not batch]
            return _json(200, others[fault.arg % len(others)].truth(now))
        return await self._common(fault, lambda: batch.truth(anyio.current_time()))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        fault, now = self._next_fault(listing=True), anyio.current_time()
        page = int(request.query.get("page", "1"))
        if fault.kind == "list_endless":
            return _json(200, _endless_page(page, fault.arg))
        if page > 1:
            return _json(200, _page([], page, total_page=1))
        active = [b for b in self.batches if b.truth(now)["status"] in ACTIVE]
        if fault.kind == "list_stale":
            # Each batch as it once was while active: a finished batch may still be listed.
            stale = [[h for h in b.history(now) if h["status"] in ACTIVE] for b in self.batches]
            return _json(200, _page([h[fault.arg % len(h)] for h in stale if h], page))
        if fault.kind == "list_missing":
            kept = [b for i, b in enumerate(active) if (fault.arg >> i) & 1]
            return _json(200, _page([b.truth(now) for b in kept], page))
        return await self._common(
            fault, lambda: _page([b.truth(anyio.current_time()) for b in active], page)
        )

    async def _common(self, fault: Fault, truth: Any) -> web.StreamResponse:
        if fault.kind == "glitch":
            return _json(200, _glitched(truth(), fault.arg))
        if fault.kind == "status":
            return _status(fault.arg, fault.retry_after)
        if fault.kind == "garbage":
            return web.Response(status=200, body=_GARBAGE[fault.arg % len(_GARBAGE)])
        if fault.kind == "slow":
            await anyio.sleep(float(fault.arg))
        return _json(200, truth())


def _glitched(body: dict[str, Any], how: int) -> dict[str, Any]:
    """``body`` (a batch, or the first batch of a page) with counters that cannot be true,
    or a status this client does not know."""
    data = body.get("data")
    if data is not None:
        return {**body, "data": [_glitched(data[0], how), *data[1:]]} if data else body
    if body["status"] in TERMINAL:
        # The first terminal answer ends a batch, odd counters and all (a batch never
        # leaves a terminal status): a lie there cannot be told from the truth.
        return body
    changes: list[dict[str, Any]] = [
        {"ready_items": body["ready_items"] + 100},
        {"queued_items": -1},
        {"total_items": 0},
        {"status": "finalizing"},
    ]
    return {**body, **changes[how % len(changes)]}


def _page(data: list[dict[str, Any]], page: int, total_page: int = 1) -> dict[str, Any]:
    info = {"limit_per_page": 50, "page": page, "total_page": total_page, "total_results": 1}
    return {"data": data, "page_info": info}


def _endless_page(page: int, salt: int) -> dict[str, Any]:
    fake = [
        _body(f"{salt:04x}{page:010x}{i:010x}", "processing", [1, 1, 0, 0, 0], 0.0)
        for i in range(50)
    ]
    return _page(fake, page, total_page=10**9)


def _status(status: int, retry_after: str | None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    if 300 <= status < 400:
        headers["Location"] = "http://127.0.0.1:1/elsewhere"
        return web.Response(status=status, headers=headers)
    body = {"error": {"code": f"chaos_{status}", "message": "injected"}}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )
