"""`RefreshThrottle`: turns a stream of deliveries into few, timely refreshes.

A batch of 1,000 items sends 1,000 task webhooks, and in per-ID mode each
refresh polls every open batch, so refreshing on every delivery would spend
the account's request budget on identical answers. Per target (all batches,
or one batch ID) the throttle acts on the first request at once and opens a
window of ``window`` seconds; requests inside the window only mark it busy.
When the window closes the target is refreshed once more, always after a
first request (the *follow-up*) and after a busy window, which then opens the
next one. So a burst costs one refresh per window plus one, and a lone
delivery costs two refreshes.

The follow-up is deliberate. It catches a batch status that lags behind its
task webhook, and a change the server made just after answering a poll that
was already in flight when the delivery arrived (the watcher cannot poll a
batch twice at once, so a refresh during that poll changes nothing).

Timers run on the event loop's clock, so they follow virtual time in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    handle: asyncio.TimerHandle
    first: bool
    busy: bool = False


class RefreshThrottle:
    """Calls ``act(target)`` for requested targets (None: all), at most once per window.

    ``window=None`` turns throttling off: every request acts at once, with no
    follow-up. Must be used from a running asyncio loop.
    """

    def __init__(self, window: float | None, act: Callable[[str | None], None]) -> None:
        if window is not None and window <= 0:
            raise ValueError("the coalescing window must be positive, or None")
        self._enabled = window is not None
        self._seconds = window or 0.0
        self._act = act
        self._open: dict[str | None, _Window] = {}

    def request(self, target: str | None) -> None:
        """Refresh ``target`` now, or at the end of its open window."""
        if not self._enabled:
            self._act(target)
            return
        window = self._open.get(target)
        if window is not None:
            window.busy = True
            return
        self._act(target)
        self._start(target, first=True)

    def close(self) -> None:
        """Cancel every pending follow-up; later requests still work."""
        for window in self._open.values():
            window.handle.cancel()
        self._open.clear()

    @property
    def pending(self) -> int:
        """Targets with a window open (a follow-up may still come)."""
        return len(self._open)

    def _start(self, target: str | None, *, first: bool) -> None:
        handle = asyncio.get_running_loop().call_later(self._seconds, self._close, target)
        self._open[target] = _Window(handle, first=first)

    def _close(self, target: str | None) -> None:
        window = self._open.pop(target)
        if window.first or window.busy:
            self._act(target)
        if window.busy:
            self._start(target, first=False)
