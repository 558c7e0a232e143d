"""How big the next batch is: keep every slot busy until the end (pure; no IO, no clock).

A batch's items run a few at a time whatever its size, so a batch's duration grows with its
size, and an account's throughput is its slots times that per-batch pace. Naive chunks of
1,000 leave slots idle at the end: 6,000 requests in six batches of 1,000 run five at once,
then one alone for a whole batch's time (about 1.7x the ideal).

`next_batch_size` fills levels instead. Each slot has a load: a running batch's items not
yet finished (queued or processing, from its latest snapshot), a free slot none. The work
left (waiting items plus those loads) is spread so that every slot ends at the same level,
in as few equal rounds as the per-batch cap allows; the free slot gets what brings it to
that level. 6,000 requests become ten batches of 600, two rounds on five slots; near the
end, batches shrink to what the other slots will still take, and a remainder too small to
be worth a batch of its own is folded into the current one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_BATCH_SIZE = 1000
"""The API's cap on requests per batch."""

FOLD_FRACTION = 0.2
"""A remainder smaller than this fraction of the batch being planned joins it."""


def next_batch_size(
    waiting: int,
    *,
    free_slots: int,
    running: Sequence[int],
    cap: int = MAX_BATCH_SIZE,
) -> int:
    """The size of the batch to create now in one free slot, 0 when nothing waits.

    Args:
        waiting: requests not yet in any batch (retries included).
        free_slots: slots free now, the one being filled included (at least 1).
        running: the unfinished items of each of our batches running now.
        cap: the largest batch allowed.
    """
    if waiting <= 0:
        return 0
    if free_slots < 1 or cap < 1:
        raise ValueError("need at least one free slot and a positive cap")
    slots = free_slots + len(running)
    work = waiting + sum(max(0, load) for load in running)
    rounds = max(1, math.ceil(work / (slots * cap)))
    level = math.ceil(work / (slots * rounds))
    size = min(waiting, cap, max(1, level))
    rest = waiting - size
    if 0 < rest <= FOLD_FRACTION * size and size + rest <= cap:
        size += rest  # a tiny last batch would wait for a slot and run alone
    return size
