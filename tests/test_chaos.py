"""Model-based chaos: a watcher against a server that may lie, stall or fail at any step.

Hypothesis draws each batch's true life (`tests._chaos.true_batches`) and a
script of faults, one per request, which the server plays before it starts to
tell the truth. The watcher runs on virtual time. After every run:

* each batch has exactly one final event, last, and it is ``done`` with the
  server's true final snapshot (the server told the truth in the end, and no
  fault in the script may end a batch: no 401, 403 or 404);
* a batch's events never repeat a snapshot and each carries its own batch's
  object; among snapshots whose counters can be true, status rank and
  finished items never go backwards (the server may also answer impossible
  counters or a status we do not know);
* once a batch has ended and the server tells the truth about it (GETs do,
  even when the list goes on lying), ``done`` follows within a bounded time;
* no request storm: the requests in any simulated minute, and in any second,
  stay under bounds set by ``min_interval`` and the number of batches.

The short run is part of ``make test``; ``ASYNCBATCH_CHAOS_EXAMPLES=2000
pytest tests/test_chaos.py`` runs a long one with fresh random cases. Every
failure found this way is kept as a named test in `tests/test_hostile_server.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from itertools import pairwise
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncbatch import Client, Event, EventKind, Strategy
from asyncbatch._events import STATUS_RANK, is_plausible
from asyncbatch._tracker import VERIFY_INTERVALS
from asyncbatch.testing import VirtualTimeLoop
from tests._chaos import ChaosServer, Fault, TrueBatch, faults, true_batches

IDS = ["68f4ddaf8aaa60d33df0e800", "68f4ddaf8aaa60d33df0e801", "68f4ddaf8aaa60d33df0e802"]
MIN_INTERVAL, MAX_INTERVAL = 2.0, 20.0
_LONG_RUN = os.environ.get("ASYNCBATCH_CHAOS_EXAMPLES")


@st.composite
def worlds(draw: st.DrawFn) -> list[TrueBatch]:
    count = draw(st.integers(1, len(IDS)))
    return [draw(true_batches(batch_id)) for batch_id in IDS[:count]]


@settings(
    max_examples=int(_LONG_RUN or 30),
    derandomize=_LONG_RUN is None,  # the short run is the same every time: it never flakes
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    world=worlds(),
    script=st.lists(faults, max_size=60),
    list_lies_forever=st.booleans(),
    strategy=st.sampled_from(list(Strategy)),
    concurrency=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_watcher_keeps_its_promises_whatever_the_server_does(  # noqa: PLR0917
    world: list[TrueBatch],
    script: list[Fault],
    list_lies_forever: bool,
    strategy: Strategy,
    concurrency: int,
    seed: int,
) -> None:
    """One correct final event per batch, in bounded time once the truth can be had; never
    backwards or repeated; no request storm."""
    server = ChaosServer(world, list(script), list_lies_forever)
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        timed = runner.run(_watch(server, strategy, concurrency, seed))
    _check_events(world, [event for _, event in timed])
    _check_latency(world, timed, truth_from=server.played_at)
    _check_request_rate(server.request_times, batches=len(world))


async def _watch(
    server: ChaosServer, strategy: Strategy, concurrency: int, seed: int
) -> list[tuple[float, Event]]:
    options: dict[str, Any] = {
        "strategy": strategy,
        "max_concurrency": concurrency,
        "min_interval": MIN_INTERVAL,
        "max_interval": MAX_INTERVAL,
        "max_decode_failures": 1000,  # no fault may end a batch; see the module docstring
        "timeout": 24 * 3600.0,  # a batch never ended: its `error` fails the checks
        "seed": seed,
    }
    async with (
        server,
        Client(api_key="chaos-key", base_url=server.url, timeout=60.0) as client,
        client.watch([b.batch_id for b in server.batches], **options) as watcher,
    ):
        return [(anyio.current_time(), event) async for event in watcher]


def _check_events(world: list[TrueBatch], events: list[Event]) -> None:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.batch_id].append(event)
    assert set(grouped) == {b.batch_id for b in world}
    for batch in world:
        history = grouped[batch.batch_id]
        assert [e.is_final for e in history] == [False] * (len(history) - 1) + [True], history
        final = history[-1]
        assert final.kind is EventKind.DONE, final
        assert final.batch is not None
        assert _fields(final.batch) == _fields_of_body(batch.final), (final.batch, batch.final)
        snapshots = [e.batch for e in history if e.batch is not None]
        assert all(s.batch_id == batch.batch_id for s in snapshots)
        assert all(a != b for a, b in pairwise(snapshots)), history
        # Glitched snapshots (impossible counters) promise nothing; true ones never go back.
        plausible = [s for s in snapshots if is_plausible(s)]
        ranks = [STATUS_RANK[s.status] for s in plausible if s.status in STATUS_RANK]
        assert ranks == sorted(ranks), history
        finished = [s.finished_items for s in plausible]
        assert finished == sorted(finished), history


def _check_latency(
    world: list[TrueBatch], timed: list[tuple[float, Event]], *, truth_from: float
) -> None:
    # Once a batch has ended and GETs tell the truth (``truth_from``, infinite when the
    # run ended before the script did), its `done` may wait for: a
    # request in flight (a slow answer, at most the client's timeout), a 429 pause
    # (at most max_interval, as Retry-After is at most 30 s here), and its next GET,
    # which no sweep can postpone past VERIFY_INTERVALS max_intervals (jittered).
    slack = 60.0 + MAX_INTERVAL + (VERIFY_INTERVALS + 1) * MAX_INTERVAL * 1.2
    done_at = {event.batch_id: when for when, event in timed if event.is_final}
    for batch in world:
        ended = batch.timeline[-1][0]
        assert done_at[batch.batch_id] <= max(ended, truth_from) + slack, (
            batch.batch_id,
            done_at[batch.batch_id],
            ended,
            truth_from,
        )


def _check_request_rate(times: list[float], *, batches: int) -> None:
    # In any minute, per batch at most one poll per min_interval, one retry per half
    # of it and one GET per sweep that misses it; sweeps at most four pages each. In
    # any second, at most a burst as a pause ends: every batch and a sweep at once,
    # then a GET for each batch the sweep missed.
    for window, bound in ((60.0, (batches + 1) * 4 * 60.0 / MIN_INTERVAL), (1.0, 3 * batches + 6)):
        start = 0
        for end, when in enumerate(times):
            while times[start] < when - window:
                start += 1
            assert end - start + 1 <= bound, (window, when, end - start + 1, bound)


_COMPARED = (
    "batch_id",
    "status",
    "total_items",
    "queued_items",
    "processing_items",
    "ready_items",
    "failed_items",
    "canceled_items",
)


def _fields(batch: Any) -> tuple[Any, ...]:
    return tuple(getattr(batch, name) for name in _COMPARED)


def _fields_of_body(body: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(body[name] for name in _COMPARED)
