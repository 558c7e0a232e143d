"""WebhookReceiver over HTTP on 127.0.0.1: answers, duplicates, replays, refreshes, hand-off."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from asyncbatch.webhooks import WebhookEvent, WebhookReceiver, sign

pytestmark = pytest.mark.anyio

SECRET = "whsec-receiver-test-SECRET"
NOW = 1_784_544_000
BATCH = "68f4ddaf8aaa60d33df0e800"
TASK = "68f4ddaf8aaa60d33df0e900"
PATH = "/webhooks/twelvelabs"


@dataclass
class RecordingWatcher:
    """Stands in for `asyncbatch.Watcher`: records each ``refresh`` call it receives."""

    calls: list[str | None] = field(default_factory=list)

    def refresh(self, batch_id: str | None = None) -> None:
        self.calls.append(batch_id)


@dataclass
class Clock:
    """Unix time the receiver checks timestamps against; tests move it by hand."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


def delivery(delivery_id: str = "whe_1", type_: str = "analyze.task.ready", **data: Any) -> bytes:
    """A webhook body as TwelveLabs would send it."""
    data = data or {"id": TASK, "custom_id": "summary-001", "status": "ready"}
    envelope = {"id": delivery_id, "created_at": "2026-07-20T10:40:00Z", "type": type_}
    return msgspec.json.encode({**envelope, "data": data})


@dataclass
class Endpoint:
    """A receiver served on 127.0.0.1 and a client session posting to it."""

    receiver: WebhookReceiver
    session: aiohttp.ClientSession
    url: str

    async def post(
        self, body: bytes, signature: str | None = None, *, signed_at: int = NOW
    ) -> tuple[int, str]:
        """POST ``body``, signed at ``signed_at`` unless a header is given; (status, text)."""
        header = sign(body, SECRET, timestamp=signed_at) if signature is None else signature
        headers = {"TL-Signature": header, "Content-Type": "application/json"}
        async with self.session.post(self.url, data=body, headers=headers) as response:
            return response.status, await response.text()


@asynccontextmanager
async def endpoint(receiver: WebhookReceiver, **app_options: Any) -> AsyncIterator[Endpoint]:
    """Serve ``receiver.app()`` with aiohttp's test server and open a client session."""
    async with (
        TestServer(receiver.app(PATH, **app_options), host="127.0.0.1") as server,
        aiohttp.ClientSession() as session,
    ):
        yield Endpoint(receiver, session, str(server.make_url(PATH)))


def receiver_for(
    watcher: RecordingWatcher,
    on_event: Callable[[WebhookEvent], object] | None = None,
    **options: Any,
) -> WebhookReceiver:
    """A receiver refreshing ``watcher`` on every delivery (no coalescing), on a fixed clock."""
    options.setdefault("clock", Clock())
    options.setdefault("coalesce", None)
    return WebhookReceiver(SECRET, watchers=[watcher], on_event=on_event, **options)


async def test_a_valid_delivery_is_acknowledged_refreshes_and_is_handed_on() -> None:
    """A signed task event answers 200, refreshes every batch once and reaches on_event."""
    watcher, events = RecordingWatcher(), list[WebhookEvent]()
    async with endpoint(receiver_for(watcher, events.append)) as hook:
        assert await hook.post(delivery()) == (200, "ok")
    assert watcher.calls == [None]
    assert [(e.id, e.type) for e in events] == [("whe_1", "analyze.task.ready")]


async def test_a_retried_delivery_is_acknowledged_but_not_acted_on_twice() -> None:
    """A delivery ``id`` seen before (a retry, even re-signed later) gets 200 but no new action."""
    watcher, events = RecordingWatcher(), list[WebhookEvent]()
    async with endpoint(receiver_for(watcher, events.append)) as hook:
        body = delivery("whe_retry")
        assert (await hook.post(body))[0] == 200
        assert await hook.post(body) == (200, "duplicate")
        assert await hook.post(body, signed_at=NOW + 60) == (200, "duplicate")
        stats = hook.receiver.statistics()
    assert len(watcher.calls) == len(events) == 1
    assert (stats.accepted, stats.duplicates) == (1, 2)


async def test_a_replay_after_the_window_is_refused() -> None:
    """A captured delivery sent again once its timestamp is too old gets 401 and does nothing."""
    watcher, clock = RecordingWatcher(), Clock()
    async with endpoint(receiver_for(watcher, clock=clock, remember=1)) as hook:
        captured_body, captured_header = (
            delivery("whe_a"),
            sign(delivery("whe_a"), SECRET, timestamp=NOW),
        )
        assert (await hook.post(captured_body, captured_header))[0] == 200
        assert (await hook.post(delivery("whe_b")))[0] == 200  # pushes whe_a out of memory
        clock.now += 301
        assert await hook.post(captured_body, captured_header) == (401, "bad signature")
        assert hook.receiver.statistics().rejected == 1
    assert len(watcher.calls) == 2


async def test_de_duplication_memory_is_bounded() -> None:
    """Only the last ``remember`` ids are kept: an id older than that is treated as new."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher, remember=2)) as hook:
        for delivery_id in ("whe_a", "whe_b", "whe_c", "whe_a", "whe_c"):
            await hook.post(delivery(delivery_id))
        stats = hook.receiver.statistics()
    assert (stats.accepted, stats.duplicates) == (4, 1)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=1784544000",
        f"t={NOW},v1={'0' * 64}",
        sign(delivery(), "some-other-secret", timestamp=NOW),
        sign(delivery(), SECRET, timestamp=NOW + 301),
    ],
    ids=["missing", "no-v1", "forged", "wrong-secret", "future"],
)
async def test_bad_signatures_get_401_and_do_nothing(header: str) -> None:
    """Whatever is wrong with the signature, the answer is 401 and no watcher is touched."""
    watcher, events = RecordingWatcher(), list[WebhookEvent]()
    async with endpoint(receiver_for(watcher, events.append)) as hook:
        assert await hook.post(delivery(), header) == (401, "bad signature")
    assert watcher.calls == []
    assert events == []


async def test_a_missing_header_gets_401() -> None:
    """A POST with no TL-Signature header at all is refused as unsigned."""
    watcher = RecordingWatcher()
    async with (
        endpoint(receiver_for(watcher)) as hook,
        hook.session.post(hook.url, data=delivery()) as response,
    ):
        assert response.status == 401
    assert watcher.calls == []


@pytest.mark.parametrize(
    "body", [b"not json", b"{}", b'{"id":"whe_1","type":"x"}'], ids=["junk", "empty", "no-date"]
)
async def test_a_signed_body_that_is_not_an_event_gets_400(body: bytes) -> None:
    """A correctly signed body that is not a webhook event is a bad request, not a bad signature."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher)) as hook:
        assert await hook.post(body) == (400, "bad body")
        assert hook.receiver.statistics().malformed == 1
    assert watcher.calls == []


async def test_refreshes_follow_what_the_event_names() -> None:
    """Task events refresh all; a batch-naming event refreshes that batch; index events nothing."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher)) as hook:
        await hook.post(delivery("whe_1", "analyze.task.failed"))
        await hook.post(
            delivery("whe_2", "analyze.batch.completed", batch_id=BATCH, status="completed")
        )
        await hook.post(delivery("whe_3", "some.future.type", id=BATCH))
        await hook.post(delivery("whe_4", "index.task.ready", id=TASK))
        await hook.post(delivery("whe_5", "analyze.batch.completed", note="no id"))
    assert watcher.calls == [None, BATCH, BATCH, None]


async def test_every_attached_watcher_is_refreshed_and_detached_ones_are_not() -> None:
    """A receiver can serve several watchers; a detached one hears nothing more."""
    first, second = RecordingWatcher(), RecordingWatcher()
    receiver = receiver_for(first)
    receiver.attach(second)
    async with endpoint(receiver) as hook:
        await hook.post(delivery("whe_1"))
        receiver.detach(first)
        await hook.post(delivery("whe_2"))
    assert (first.calls, second.calls) == ([None], [None, None])


async def test_slow_consumers_never_delay_the_answer() -> None:
    """Deliveries fed to a bounded stream are answered at once though each takes minutes."""
    watcher = RecordingWatcher()
    send, receive = anyio.create_memory_object_stream[WebhookEvent](8)
    handled: list[tuple[str, float]] = []

    async def slow_consumer() -> None:
        async with receive:
            async for item in receive:
                await anyio.sleep(120)  # e.g. fetching results
                handled.append((item.id, anyio.current_time()))

    async with anyio.create_task_group() as tasks, send:
        tasks.start_soon(slow_consumer)
        async with endpoint(receiver_for(watcher, send.send_nowait)) as hook:
            started = anyio.current_time()
            for n in range(3):
                assert (await hook.post(delivery(f"whe_{n}")))[0] == 200
            answered_within = anyio.current_time() - started
    assert answered_within < 1
    assert [delivery_id for delivery_id, _ in handled] == ["whe_0", "whe_1", "whe_2"]
    assert handled[-1][1] - started >= 360


async def test_a_failing_callback_answers_500_and_lets_the_retry_through() -> None:
    """If on_event raises, the sender gets 500 and its retry of that delivery is acted on."""
    watcher, seen = RecordingWatcher(), list[str]()

    def flaky(event: WebhookEvent) -> None:
        seen.append(event.id)
        if len(seen) == 1:
            raise RuntimeError("the queue is full")

    async with endpoint(receiver_for(watcher, flaky)) as hook:
        body = delivery("whe_flaky")
        assert await hook.post(body) == (500, "callback failed")
        assert await hook.post(body) == (200, "ok")
        assert hook.receiver.statistics().callback_errors == 1
    assert seen == ["whe_flaky", "whe_flaky"]


async def test_other_methods_and_oversized_bodies_are_refused() -> None:
    """GET gets 405; a body above ``max_body`` gets 413 before anything is verified."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher), max_body=1024) as hook:
        async with hook.session.get(hook.url) as response:
            assert response.status == 405
        big = delivery("whe_big", note="x" * 2048)
        assert (await hook.post(big))[0] == 413
    assert watcher.calls == []


async def test_bursts_are_coalesced_and_followed_up() -> None:
    """Coalesced: a burst of task deliveries costs one refresh now and one when the window ends."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher, coalesce=5.0)) as hook:
        for n in range(20):
            assert (await hook.post(delivery(f"whe_{n}")))[0] == 200
        assert watcher.calls == [None]
        await hook.post(delivery("whe_batch", "analyze.batch.completed", batch_id=BATCH))
        assert watcher.calls == [None, BATCH]  # another target: not held back
        await anyio.sleep(60)
    assert watcher.calls == [None, BATCH, None, BATCH]
    assert hook.receiver.statistics().accepted == 21


async def test_cleanup_cancels_pending_follow_ups() -> None:
    """Once the app is cleaned up, no follow-up refresh reaches the watcher."""
    watcher = RecordingWatcher()
    async with endpoint(receiver_for(watcher, coalesce=5.0)) as hook:
        await hook.post(delivery())
    await anyio.sleep(60)
    assert watcher.calls == [None]


def test_coroutine_callbacks_are_refused_up_front() -> None:
    """An async on_event would delay or drop work silently, so it is a TypeError at once."""

    async def handler(event: WebhookEvent) -> None:
        del event

    with pytest.raises(TypeError, match="synchronous"):
        WebhookReceiver(SECRET, on_event=handler)


def test_the_secret_stays_out_of_the_repr() -> None:
    """The receiver's repr names neither the secret nor its bytes."""
    text = repr(WebhookReceiver([SECRET, "older-SECRET"]))
    assert "SECRET" not in text
    assert "WebhookReceiver" in text
