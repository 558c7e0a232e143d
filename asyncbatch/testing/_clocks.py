"""Clocks for the simulator: zero-argument callables that return seconds as a float.

The simulator reads time only through one of these, so a test decides how time
passes: `loop_clock` follows the event loop (virtual under `VirtualTimeLoop`),
`ScaledClock` runs faster than real time for demos, and `ManualClock` moves only
when told to, which lets a test step through a batch's life without any loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

Clock = Callable[[], float]
"""A zero-argument callable returning the current time in seconds; it must never go back."""


def loop_clock() -> float:
    """The running event loop's clock (``anyio.current_time``); needs a running loop."""
    return anyio.current_time()


class ManualClock:
    """A clock that stands still until `advance` moves it.

    >>> clock = ManualClock()
    >>> clock.advance(30)
    >>> clock()
    30.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``; a negative step raises `ValueError`."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back, got advance({seconds!r})")
        self._now += seconds


class ScaledClock:
    """``scale`` simulated seconds per real second, counted from the first reading.

    ``base`` is the real clock it scales (default `time.monotonic`); pass
    `loop_clock` to scale the event loop's time instead.
    """

    def __init__(self, scale: float, *, base: Clock = time.monotonic) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = scale
        self._base = base
        self._origin: float | None = None

    def __call__(self) -> float:
        now = self._base()
        if self._origin is None:
            self._origin = now
        return (now - self._origin) * self.scale

    def __repr__(self) -> str:
        return f"ScaledClock({self.scale!r})"
