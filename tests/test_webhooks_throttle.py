"""RefreshThrottle on virtual time: first request at once, bursts coalesced, follow-ups."""

from __future__ import annotations

import anyio
import pytest

from asyncbatch._webhooks.throttle import RefreshThrottle

pytestmark = pytest.mark.anyio

BATCH = "68f4ddaf8aaa60d33df0e800"


class Recorder:
    """Records each refresh as (target, seconds since the recorder was made)."""

    def __init__(self) -> None:
        self.start = anyio.current_time()
        self.acts: list[tuple[str | None, float]] = []

    def __call__(self, target: str | None) -> None:
        self.acts.append((target, anyio.current_time() - self.start))


async def test_a_lone_request_acts_at_once_and_once_more_after_the_window() -> None:
    """One delivery: a refresh now, and the follow-up when the window closes."""
    recorder = Recorder()
    throttle = RefreshThrottle(5.0, recorder)
    throttle.request(None)
    assert recorder.acts == [(None, 0.0)]
    await anyio.sleep(30)
    assert recorder.acts == [(None, 0.0), (None, 5.0)]
    assert throttle.pending == 0


async def test_a_burst_costs_one_refresh_per_window_plus_one() -> None:
    """Requests every second for 12 s refresh at 0, 5, 10 and 15 s, then stop."""
    recorder = Recorder()
    throttle = RefreshThrottle(5.0, recorder)
    for _ in range(13):
        throttle.request(None)
        await anyio.sleep(1)
    await anyio.sleep(60)
    assert recorder.acts == [(None, 0.0), (None, 5.0), (None, 10.0), (None, 15.0)]


async def test_targets_have_their_own_windows() -> None:
    """A batch's refresh is not held back by an open window for all batches."""
    recorder = Recorder()
    throttle = RefreshThrottle(5.0, recorder)
    throttle.request(None)
    await anyio.sleep(1)
    throttle.request(BATCH)
    await anyio.sleep(30)
    assert recorder.acts == [(None, 0.0), (BATCH, 1.0), (None, 5.0), (BATCH, 6.0)]


async def test_close_cancels_follow_ups_and_the_throttle_still_works() -> None:
    """After close nothing pending fires; a new request acts at once again."""
    recorder = Recorder()
    throttle = RefreshThrottle(5.0, recorder)
    throttle.request(None)
    throttle.close()
    await anyio.sleep(30)
    throttle.request(None)
    assert recorder.acts == [(None, 0.0), (None, 30.0)]


async def test_without_a_window_every_request_acts() -> None:
    """``window=None`` refreshes on every request and schedules nothing."""
    recorder = Recorder()
    throttle = RefreshThrottle(None, recorder)
    for _ in range(3):
        throttle.request(BATCH)
    assert recorder.acts == [(BATCH, 0.0)] * 3
    assert throttle.pending == 0


def test_a_non_positive_window_is_refused() -> None:
    """A zero or negative window is a configuration mistake."""
    with pytest.raises(ValueError, match="positive"):
        RefreshThrottle(0, print)
