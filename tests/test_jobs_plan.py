"""Batch sizing (`next_batch_size`) and item settling (`settle`), as pure functions.

The makespan check runs a small model of the account: five slots, each batch running its
items four at a time (20 s each, as the simulator's defaults), a batch starting as soon as
a slot frees. The planner must stay within 1.1x of the ideal (every slot busy all the
time) where naive 1,000-request chunks do not.
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbatch._jobs.ledger import WAITING, settle
from asyncbatch._jobs.plan import next_batch_size
from asyncbatch._models import ItemError

SLOTS = 5
LANES = 4
ITEM_SECONDS = 20.0


def makespan(total: int, choose: object) -> float:
    """Seconds to run ``total`` requests when ``choose(waiting, free, running)`` sizes batches."""
    assert callable(choose)
    now = 0.0
    waiting = total
    running: list[tuple[float, int, float]] = []  # (end, size, start)
    while waiting or running:
        while waiting and len(running) < SLOTS:
            loads = [_left(size, start, end, now) for end, size, start in running]
            size = choose(waiting, SLOTS - len(running), loads)
            duration = math.ceil(size / LANES) * ITEM_SECONDS
            heapq.heappush(running, (now + duration, size, now))
            waiting -= size
        now = heapq.heappop(running)[0]
    return now


def _left(size: int, start: float, end: float, now: float) -> int:
    return math.ceil(size * (end - now) / (end - start))


def ideal(total: int) -> float:
    return total * ITEM_SECONDS / (SLOTS * LANES)


def planned(waiting: int, free: int, running: list[int]) -> int:
    return next_batch_size(waiting, free_slots=free, running=running)


def naive(waiting: int, free: int, running: list[int]) -> int:
    return min(waiting, 1000)


@pytest.mark.parametrize("total", [1000, 2500, 5000, 6000, 7300, 12000, 16500, 20000])
def test_planned_batches_keep_every_slot_busy_to_the_end(total: int) -> None:
    """Planned batch sizes finish a job within 10% of the ideal time, keeping every slot busy."""
    assert makespan(total, planned) <= 1.1 * ideal(total)


@pytest.mark.parametrize("total", [1000, 6000, 7000])
def test_naive_chunks_of_a_thousand_leave_slots_idle(total: int) -> None:
    """The baseline the planner beats: a last round with fewer batches than slots."""
    assert makespan(total, naive) >= 1.4 * ideal(total)


@given(
    waiting=st.integers(0, 50_000),
    free=st.integers(1, 5),
    running=st.lists(st.integers(0, 1000), max_size=4),
    cap=st.integers(1, 1000),
)
def test_a_batch_is_never_empty_nor_over_the_cap_nor_more_than_waits(
    waiting: int, free: int, running: list[int], cap: int
) -> None:
    """A planned batch is empty only when nothing waits, otherwise between 1 and the lesser of
    what waits and the cap."""
    size = next_batch_size(waiting, free_slots=free, running=running, cap=cap)
    if waiting == 0:
        assert size == 0
    else:
        assert 1 <= size <= min(waiting, cap)


def test_a_small_remainder_joins_the_last_batch() -> None:
    """A remainder is spread over the last round rather than sent as a tiny batch of its own."""
    # 1,003 on five free slots is 201 each; the fifth takes the last 199, not 198 and a 1.
    sizes: list[int] = []
    running: list[int] = []
    waiting = 1003
    while waiting:
        size = next_batch_size(waiting, free_slots=5 - len(running), running=running)
        sizes.append(size)
        running.append(size)
        waiting -= size
    assert sizes == [201, 201, 201, 201, 199]


def test_six_thousand_become_ten_batches_of_six_hundred() -> None:
    """6,000 requests on five free slots are planned as batches of 600, not of the 1,000 cap."""
    assert next_batch_size(6000, free_slots=5, running=[]) == 600


ERROR = ItemError(message="no", code="x")


@pytest.mark.parametrize(
    ("status", "batch_status", "attempts", "canceling", "expected"),
    [
        ("ready", "completed", 1, False, "ready"),
        ("ready", "canceled", 3, True, "ready"),
        ("failed", "completed", 1, False, WAITING),
        ("failed", "completed", 3, False, "failed"),
        ("canceled", "expired", 1, False, WAITING),
        ("canceled", "expired", 3, False, "failed"),
        ("canceled", "canceled", 1, False, "canceled"),
        ("canceled", "canceled", 1, True, "canceled"),
        ("failed", "completed", 1, True, "canceled"),
        ("failed", "completed", 3, True, "failed"),
        ("missing", "completed", 1, False, WAITING),
        ("processing", "gone", 3, False, "failed"),
    ],
)
def test_settle_decides_what_an_ended_attempt_means(
    status: str, batch_status: str, attempts: int, canceling: bool, expected: str
) -> None:
    """`settle` maps an item's status, its batch's end, the attempts and cancelling to ready,
    waiting again, failed or canceled, keeping the item's own error."""
    outcome = settle(
        status,
        batch_status=batch_status,
        attempts=attempts,
        max_attempts=3,
        canceling=canceling,
        error=ERROR if status == "failed" else None,
    )
    assert outcome.state == expected
    assert (outcome.error is None) == (expected == "ready")
    if status == "failed" and expected != "ready":
        assert outcome.error == ERROR  # the item's own reason is kept
