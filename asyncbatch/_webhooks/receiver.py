"""`WebhookReceiver`: an aiohttp.web endpoint that turns deliveries into watcher refreshes.

Each POST is handled without awaiting anything but its own body, so the
sender always gets its answer at once:

* ``401`` when the signature or timestamp does not verify (`verify`);
* ``400`` when a verified body is not a webhook event;
* ``413`` when the body is over the app's ``client_max_size`` or 16 MiB,
  counted as it is decompressed;
* ``200`` for a new delivery, and also for one whose ``id`` was seen recently
  (a retry, or a replay inside the tolerance window): acknowledged so that the
  sender stops retrying, but not acted on a second time;
* ``500`` when ``on_event`` raised (below).

A new delivery refreshes every attached watcher (`refresh_targets` says
which batches; `RefreshThrottle` coalesces bursts and adds one follow-up),
then goes to ``on_event``. ``Watcher.refresh`` only reschedules: the polling
happens in the watcher's own tasks, never in the handler. ``on_event`` must
likewise return at once (put the event on a bounded memory stream with
``send_nowait``, say); if it raises, the answer is ``500`` and the ``id`` is
forgotten, so the sender's retry gets another go.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web

from .._errors import WebhookVerificationError
from .._transport import MAX_BODY_BYTES
from .event import REFRESH_ALL, WebhookEvent, WebhookPayloadError, refresh_targets
from .signature import DEFAULT_TOLERANCE, SIGNATURE_HEADER, Secrets, secret_keys, verify
from .throttle import RefreshThrottle

logger = logging.getLogger("asyncbatch.webhooks")

DEFAULT_PATH: Final = "/webhooks/twelvelabs"
DEFAULT_MAX_BODY: Final = 1024 * 1024
DEFAULT_COALESCE: Final = 5.0


class Refreshable(Protocol):
    """Anything with `asyncbatch.Watcher.refresh`'s signature."""

    def refresh(self, batch_id: str | None = None) -> None:
        """Poll one batch, or all open ones, as soon as the limits allow."""


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    """A snapshot of a receiver's counters (`WebhookReceiver.statistics`)."""

    accepted: int
    """New deliveries that verified and were acted on."""
    duplicates: int
    """Deliveries whose ``id`` was seen recently: acknowledged, not acted on."""
    rejected: int
    """Deliveries that failed verification (answered 401)."""
    malformed: int
    """Verified bodies that were not webhook events (answered 400), and bodies over the size
    limit (answered 413, unverified)."""
    refreshes: int
    """``refresh`` calls made on watchers."""
    callback_errors: int
    """``on_event`` calls that raised (answered 500)."""


class _RecentIds:
    """The last ``capacity`` delivery IDs, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, delivery_id: str) -> bool:
        """Remember an ID; False when it was already remembered."""
        if delivery_id in self._ids:
            self._ids.move_to_end(delivery_id)
            return False
        self._ids[delivery_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, delivery_id: str) -> None:
        self._ids.pop(delivery_id, None)


class WebhookReceiver:
    """Verifies TwelveLabs webhook deliveries and refreshes watchers on each one.

    Mount ``receiver.handler`` on a POST route of your own aiohttp app, or
    use ``receiver.app()``; `serve_webhooks` runs one for you.

    Args:
        secret: the endpoint's secret (dashboard: Reveal Secret), or several
            while you rotate it. Never shown in reprs, logs or errors.
        watchers: watchers to refresh; more can be attached later.
        on_event: a *synchronous*, quick callable given each new event.
        tolerance: seconds a delivery's timestamp may be off, either way.
        remember: how many recent delivery IDs to keep for de-duplication.
        clock: Unix time in seconds, for the timestamp check (default: the system clock).
        coalesce: seconds during which more deliveries for the same target
            share one refresh; each refresh a delivery causes is followed by
            one more when the window ends (None: refresh on every delivery,
            no follow-up). See the throttle's notes in docs/webhooks.md.

    Call `close` (``app()`` does it on cleanup) to cancel pending follow-ups.
    """

    def __init__(
        self,
        secret: Secrets,
        *,
        watchers: Iterable[Refreshable] = (),
        on_event: Callable[[WebhookEvent], object] | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        remember: int = 4096,
        clock: Callable[[], float] = time.time,
        coalesce: float | None = DEFAULT_COALESCE,
    ) -> None:
        if on_event is not None and inspect.iscoroutinefunction(on_event):
            raise TypeError("on_event must be a synchronous callable; it may not delay the answer")
        if remember < 1 or tolerance < 0:
            raise ValueError("remember must be at least 1 and tolerance not negative")
        self._secrets = secret_keys(secret)
        self._watchers: list[Refreshable] = []
        for watcher in watchers:
            self.attach(watcher)
        self._on_event = on_event
        self._tolerance = tolerance
        self._recent = _RecentIds(remember)
        self._clock = clock
        self._throttle = RefreshThrottle(coalesce, self._refresh_now)
        self._counts = dict.fromkeys(
            ("accepted", "duplicates", "rejected", "malformed", "refreshes", "callback_errors"), 0
        )

    def __repr__(self) -> str:
        return (
            f"<asyncbatch.webhooks.WebhookReceiver watchers={len(self._watchers)} "
            f"accepted={self._counts['accepted']}>"
        )

    def attach(self, watcher: Refreshable) -> None:
        """Refresh this watcher too on each new delivery (once, however often attached)."""
        if not self._attached(watcher):
            self._watchers.append(watcher)

    def detach(self, watcher: Refreshable) -> None:
        """Stop refreshing this watcher; unknown watchers are ignored."""
        self._watchers = [w for w in self._watchers if w is not watcher]

    def _attached(self, watcher: Refreshable) -> bool:
        # By identity: watchers need not be hashable, and equal ones are still distinct.
        return any(w is watcher for w in self._watchers)

    def statistics(self) -> WebhookStatistics:
        """The receiver's counters right now."""
        return WebhookStatistics(**self._counts)

    def app(self, path: str = DEFAULT_PATH, *, max_body: int = DEFAULT_MAX_BODY) -> web.Application:
        """An aiohttp app answering ``POST path``; bigger bodies than ``max_body`` get 413."""
        application = web.Application(client_max_size=max_body)
        application.router.add_post(path, self.handler)
        application.on_cleanup.append(self._on_cleanup)
        return application

    def close(self) -> None:
        """Cancel pending follow-up refreshes. The receiver keeps working if used again."""
        self._throttle.close()

    async def _on_cleanup(self, application: web.Application) -> None:
        del application
        self.close()

    async def handler(self, request: web.Request) -> web.Response:
        """The aiohttp.web handler: verify, de-duplicate, refresh, answer."""
        body = await _read_capped(request, _body_limit(request))
        if body is None:
            return self._refuse(413, "malformed", WebhookPayloadError("the body is too large"))
        return self.receive(body, request.headers.get(SIGNATURE_HEADER))

    def receive(self, body: bytes, signature: str | None) -> web.Response:
        """Handle one delivery given its raw body and ``TL-Signature``; never awaits.

        A body over `MAX_BODY_BYTES` gets 413 before its signature is checked.
        """
        if len(body) > MAX_BODY_BYTES:
            return self._refuse(413, "malformed", WebhookPayloadError("the body is too large"))
        try:
            event = verify(
                body, signature, self._secrets, tolerance=self._tolerance, now=self._clock()
            )
        except WebhookPayloadError as exc:
            return self._refuse(400, "malformed", exc)
        except WebhookVerificationError as exc:
            return self._refuse(401, "rejected", exc)
        if not self._recent.add(event.id):
            self._counts["duplicates"] += 1
            return web.Response(status=200, text="duplicate")
        self._counts["accepted"] += 1
        self._refresh(event)
        return self._hand_off(event)

    def _refuse(self, status: int, counter: str, error: Exception) -> web.Response:
        self._counts[counter] += 1
        logger.warning("webhook delivery refused (%d): %s", status, error)
        # The reason stays in our log; the sender learns only the class of failure.
        text = {401: "bad signature", 413: "body too large"}.get(status, "bad body")
        return web.Response(status=status, text=text)

    def _refresh(self, event: WebhookEvent) -> None:
        targets = refresh_targets(event)
        for target in (None,) if targets is REFRESH_ALL else targets:
            self._throttle.request(target)

    def _refresh_now(self, target: str | None) -> None:
        for watcher in list(self._watchers):
            watcher.refresh(target)
            self._counts["refreshes"] += 1

    def _hand_off(self, event: WebhookEvent) -> web.Response:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                self._counts["callback_errors"] += 1
                self._recent.forget(event.id)
                logger.exception("on_event raised for webhook delivery %s", event.id)
                return web.Response(status=500, text="callback failed")
        return web.Response(status=200, text="ok")


def _body_limit(request: web.Request) -> int:
    """The app's ``client_max_size`` (0: unlimited), never above `MAX_BODY_BYTES`."""
    own = request.client_max_size
    return MAX_BODY_BYTES if own <= 0 else min(own, MAX_BODY_BYTES)


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes as decoded (a gzip body is counted
    after decompression, not by its ``Content-Length``)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
