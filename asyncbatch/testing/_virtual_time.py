"""An asyncio event loop whose clock jumps ahead whenever the loop would sleep.

Every sleep, timeout and ``call_later`` runs on ``loop.time()``. This loop keeps
that time in a plain number and, when nothing is ready to run and no socket is
readable, moves it straight to the next timer instead of waiting for it. A test
that polls every 30 s for a simulated hour therefore takes milliseconds, and
its timeline is the one the code asked for, not the machine's.

Socket I/O still happens for real: with the simulator on loopback in the same
loop, a write on one end is readable on the other before the writer returns, so
"nothing readable" means the loop really is idle. Time never moves while a
socket is ready or a callback is queued.

Use it with anyio's pytest plugin::

    @pytest.fixture
    def anyio_backend():
        return ("asyncio", {"loop_factory": VirtualTimeLoop})

or directly: ``asyncio.run(main(), loop_factory=VirtualTimeLoop)`` (Python 3.12+)
or ``anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})``.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

# A short real wait before each jump: loopback delivery within this process is
# synchronous on Linux, so this is insurance against a peer that has not been
# scheduled yet, not a source of timing. It bounds the real cost of a jump.
_GRACE_SECONDS = 0.0002
# A jump this long is rare (a deadline, a socket timeout) and would skip a great
# deal, so it first waits longer for real I/O: another process (a Redis server, a
# worker thread) may be about to answer.
_LONG_JUMP_SECONDS = 60.0
_LONG_GRACE_SECONDS = 0.02


class _JumpingSelector(selectors.BaseSelector):
    """Wraps the real selector; turns an idle wait into a clock jump."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            # No timer at all: only I/O (or another thread) can wake us, so wait for real.
            return self._inner.select(None)
        grace = _LONG_GRACE_SECONDS if timeout > _LONG_JUMP_SECONDS else _GRACE_SECONDS
        ready = self._inner.select(min(timeout, grace))
        if not ready:
            self._loop.advance(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time that skips idle waits."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        """The virtual time in seconds; starts at 0."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; timers due by then run on the next loop turn."""
        self._virtual_now += max(0.0, seconds)
