"""`VirtualTimeLoop`: the clock jumps over idle waits, and only over idle waits."""

from __future__ import annotations

import asyncio
import threading
import time

import anyio
import anyio.to_thread
import pytest

pytestmark = pytest.mark.anyio


async def test_an_idle_wait_costs_no_wall_time() -> None:
    """An hour of sleeping moves the virtual clock by an hour in a blink of real time."""
    started, real = anyio.current_time(), time.monotonic()
    await anyio.sleep(3600)
    assert anyio.current_time() - started == pytest.approx(3600)
    assert time.monotonic() - real < 1.0


async def test_the_clock_waits_for_a_worker_thread_before_jumping() -> None:
    """While a worker thread the loop awaits takes real milliseconds (a disk write), the
    clock does not jump to the next timer: the answer comes back at the same virtual time."""
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 30.0)  # a timer the clock could jump to
        started = anyio.current_time()
        await anyio.to_thread.run_sync(time.sleep, 0.05)
        assert anyio.current_time() == started
        group.cancel_scope.cancel()


async def test_run_in_executor_holds_the_clock_too() -> None:
    """A call awaited through asyncio's ``run_in_executor`` is waited for like anyio's."""
    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep, 30.0)
        started = anyio.current_time()
        await loop.run_in_executor(None, time.sleep, 0.05)
        assert anyio.current_time() == started
        group.cancel_scope.cancel()


async def test_a_worker_thread_that_never_returns_does_not_stop_the_clock() -> None:
    """A thread call that outlasts a second of real time no longer holds the clock back, so
    a timer due meanwhile still fires (here, the one that ends the wait for the thread)."""
    release = threading.Event()
    real = time.monotonic()
    with anyio.move_on_after(600.0):
        await anyio.to_thread.run_sync(release.wait, abandon_on_cancel=True)
    release.set()
    assert anyio.current_time() >= 600.0
    assert time.monotonic() - real < 5.0
