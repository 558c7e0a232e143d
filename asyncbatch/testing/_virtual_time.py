"""An asyncio event loop whose clock jumps ahead whenever the loop would sleep.

Every sleep, timeout and ``call_later`` runs on ``loop.time()``. This loop keeps
that time in a plain number and, when nothing is ready to run and no socket is
readable, moves it straight to the next timer instead of waiting for it. A test
that polls every 30 s for a simulated hour therefore takes milliseconds, and
its timeline is the one the code asked for, not the machine's.

Socket I/O still happens for real: with the simulator on loopback in the same
loop, a write on one end is readable on the other before the writer returns, so
"nothing readable" means the loop really is idle. Time never moves while a
socket is ready or a callback is queued, nor while the loop awaits a worker
thread (the SQLite store's, for one): a disk write that takes milliseconds of
real time would otherwise let the clock run minutes ahead before its answer
arrives. The loop knows of the calls it awaits through
``anyio.to_thread.run_sync`` and ``run_in_executor``; one that runs for more
than a second of real time no longer holds the clock back, and a thread
started by hand is not waited for.

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
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio.to_thread

_T = TypeVar("_T")

# A short real wait before each jump: loopback delivery within this process is
# synchronous on Linux, so this is insurance against a peer that has not been
# scheduled yet, not a source of timing. It bounds the real cost of a jump.
_GRACE_SECONDS = 0.0002
# A jump this long is rare (a deadline, a socket timeout) and would skip a great
# deal, so it first waits longer for real I/O: another process (a Redis server)
# may be about to answer.
_LONG_JUMP_SECONDS = 60.0
_LONG_GRACE_SECONDS = 0.02
# While the loop awaits a worker thread, the clock waits in steps of this much
# real time, for at most _BUSY_THREAD_PATIENCE in all.
_BUSY_THREAD_STEP = 0.001
_BUSY_THREAD_PATIENCE = 1.0


def _anyio_threads_working() -> bool:
    """Whether a task of this loop awaits ``anyio.to_thread.run_sync`` right now: its default
    limiter lends a token for every call in flight."""
    return anyio.to_thread.current_default_thread_limiter().borrowed_tokens > 0


class _JumpingSelector(selectors.BaseSelector):
    """Wraps the real selector; turns an idle wait into a clock jump."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop
        self._busy_since: float | None = None  # real time a worker thread started holding us

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
        if self._held_by_worker_thread():
            return self._inner.select(_BUSY_THREAD_STEP)
        grace = _LONG_GRACE_SECONDS if timeout > _LONG_JUMP_SECONDS else _GRACE_SECONDS
        ready = self._inner.select(min(timeout, grace))
        if not ready:
            self._loop.advance(timeout)
        return ready

    def _held_by_worker_thread(self) -> bool:
        if not (self._loop.executor_jobs or _anyio_threads_working()):
            self._busy_since = None
            return False
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        return now - self._busy_since < _BUSY_THREAD_PATIENCE

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time that skips idle waits."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self.executor_jobs = 0
        """Calls of `run_in_executor` still running: the clock waits for them."""
        super().__init__(_JumpingSelector(self))

    def run_in_executor(  # type: ignore[override]  # the same signature, less generic
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """As asyncio's, counted in `executor_jobs` until the call returns."""
        future = super().run_in_executor(executor, func, *args)
        self.executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _: asyncio.Future[Any]) -> None:
        self.executor_jobs -= 1

    def time(self) -> float:
        """The virtual time in seconds; starts at 0."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; timers due by then run on the next loop turn."""
        self._virtual_now += max(0.0, seconds)
