"""The sans-IO tracker: events, invariants and the poll schedule, without any IO."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncbatch import (
    AuthenticationError,
    DecodeError,
    Event,
    EventKind,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    ServerError,
    StoredBatch,
    WaitTimeoutError,
)
from asyncbatch._events import classify, is_stale
from asyncbatch._tracker import SWEEP, Strategy, Tracker
from tests._snapshots import snapshot

A = "a" * 24
B = "b" * 24
C = "c" * 24

POLICY = PollPolicy(
    min_interval=10.0, max_interval=80.0, backoff_factor=2.0, jitter=0.0, stagger=0.0
)


def tracker(strategy: Strategy = Strategy.PER_ID, policy: PollPolicy = POLICY) -> Tracker:
    return Tracker(policy, strategy=strategy, rng=random.Random(7))


def rate_limit_error(retry_after: float | None) -> RateLimitError:
    return RateLimitError(
        status=429,
        code=None,
        message=None,
        headers={},
        method="GET",
        url="/x",
        retry_after=retry_after,
    )


def server_error() -> ServerError:
    return ServerError(status=503, code=None, message=None, headers={}, method="GET", url="/x")


# -- classify: the transition rules ---------------------------------------------------


def test_first_snapshot_is_seen_or_done() -> None:
    """A first snapshot is `seen` unless it is already terminal, then `done`."""
    assert classify(None, snapshot("pending", queued=2)) is EventKind.SEEN
    assert classify(None, snapshot("completed", ready=2)) is EventKind.DONE
    assert classify(None, snapshot("validating", queued=2)) is EventKind.SEEN


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (snapshot("pending", queued=2), snapshot("processing", queued=1, processing=1), "status"),
        (snapshot("processing", queued=2), snapshot("processing", queued=1, ready=1), "progress"),
        (
            snapshot("processing", processing=1, queued=1),
            snapshot("canceling", processing=1, canceled=1),
            "status",
        ),
        (
            snapshot("canceling", processing=1, canceled=1),
            snapshot("canceled", ready=1, canceled=1),
            "done",
        ),
        (
            snapshot("processing", queued=1, ready=1),
            snapshot("expired", ready=1, canceled=1),
            "done",
        ),
        (
            snapshot("processing", queued=1, ready=1),
            snapshot("processing", queued=1, ready=1),
            None,
        ),
    ],
)
def test_classify_names_each_transition(before, after, kind) -> None:  # type: ignore[no-untyped-def]
    """Each kind of change maps to its event kind; an identical snapshot to none."""
    assert classify(before, after) == (None if kind is None else EventKind(kind))


@pytest.mark.parametrize(
    "stale",
    [
        snapshot("pending", queued=2),  # status went back
        snapshot("processing", queued=1, ready=0, processing=1),  # fewer finished
        snapshot("processing", queued=2, ready=1, processing=0),  # more queued
    ],
)
def test_stale_reads_are_ignored(stale) -> None:  # type: ignore[no-untyped-def]
    """A snapshot behind the delivered one produces no event."""
    current = snapshot("processing", queued=1, ready=1)
    assert is_stale(current, stale)
    assert classify(current, stale) is None


def test_unknown_status_is_not_stale_by_itself() -> None:
    """A status the API adds later neither blocks events nor counts as terminal."""
    current = snapshot("processing", queued=1, ready=1)
    newer = snapshot("finalizing", ready=2)
    assert classify(current, newer) is EventKind.STATUS
    assert not newer.is_terminal


# -- events through the tracker -------------------------------------------------------


def test_lifecycle_events_in_order_and_once() -> None:
    """A batch's snapshots yield seen, status, progress, done; repeats and later reads nothing."""
    t = tracker()
    t.add(A, 0.0)
    reads = [
        snapshot("pending", queued=2),
        snapshot("pending", queued=2),
        snapshot("processing", queued=1, processing=1),
        snapshot("processing", processing=1, ready=1),
        snapshot("completed", ready=1, failed=1),
    ]
    kinds = []
    for now, read in enumerate(reads):
        assert t.due(now * 100.0) == [A]
        kinds += [e.kind for e in t.observed(A, read, now * 100.0)]
    assert kinds == ["seen", "status", "progress", "done"]
    assert t.observed(A, reads[-1], 600.0) == []  # a late duplicate answer
    assert t.open_count == 0
    assert t.due(10_000.0) == []


def test_event_carries_previous_snapshot() -> None:
    """`previous` is the snapshot delivered just before."""
    t = tracker()
    t.add(A, 0.0)
    first, second = snapshot("pending", queued=1), snapshot("processing", processing=1)
    t.due(0.0)
    t.observed(A, first, 0.0)
    t.due(100.0)
    (event,) = t.observed(A, second, 100.0)
    assert (event.batch, event.previous) == (second, first)


def test_gone_is_final() -> None:
    """A 404 ends the batch with `gone`; a later snapshot is ignored."""
    t = tracker()
    t.add(A, 0.0)
    t.due(0.0)
    error = NotFoundError(
        status=404, code="resource_not_exist", message=None, headers={}, method="GET", url="/x"
    )
    (event,) = t.failed(A, error, 0.0)
    assert (event.kind, event.error, event.batch) == (EventKind.GONE, error, None)
    assert t.observed(A, snapshot("completed", ready=1), 1.0) == []
    assert t.open_count == 0


def test_transient_failure_backs_off_without_event() -> None:
    """A 5xx produces no event and delays the next poll exponentially, capped."""
    t = tracker()
    t.add(A, 0.0)
    waits = []
    now = 0.0
    for _ in range(6):
        assert t.due(now) == [A]
        assert t.failed(A, server_error(), now) == []
        wakeup = t.next_wakeup()
        assert wakeup is not None
        waits.append(wakeup - now)
        now = wakeup
    ceilings = [10, 20, 40, 80, 80, 80]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits


def test_decode_failures_end_the_batch_only_when_they_persist() -> None:
    """Undecodable bodies are retried; the batch errors only after max_decode_failures in a row."""
    t = tracker(policy=PollPolicy(min_interval=1.0, max_decode_failures=3, stagger=0.0))
    t.add(A, 0.0)
    bad = DecodeError("broken", snippet=b"{")
    now = 0.0
    for _ in range(2):
        t.due(now)
        assert t.failed(A, bad, now) == []
        now = t.next_wakeup() or now
    t.due(now)
    t.observed(A, snapshot("processing", processing=1), now)  # a good read resets the count
    for _ in range(2):
        now = t.next_wakeup() or now
        t.due(now)
        assert t.failed(A, bad, now) == []
    now = t.next_wakeup() or now
    t.due(now)
    (event,) = t.failed(A, bad, now)
    assert (event.kind, event.error) == (EventKind.ERROR, bad)
    assert event.batch == snapshot("processing", processing=1)


def test_fatal_failure_is_an_error_event() -> None:
    """An auth failure ends the batch at once with `error` carrying the cause."""
    t = tracker()
    t.add(A, 0.0)
    t.due(0.0)
    error = AuthenticationError(
        status=401, code="api_key_invalid", message=None, headers={}, method="GET", url="/x"
    )
    (event,) = t.failed(A, error, 0.0)
    assert (event.kind, event.error) == (EventKind.ERROR, error)


def test_max_failures_gives_up() -> None:
    """With max_failures set, that many transient failures in a row end the batch."""
    t = tracker(policy=PollPolicy(min_interval=1.0, max_failures=2, stagger=0.0))
    t.add(A, 0.0)
    t.due(0.0)
    assert t.failed(A, server_error(), 0.0) == []
    t.due(t.next_wakeup() or 0.0)
    (event,) = t.failed(A, server_error(), 5.0)
    assert event.kind is EventKind.ERROR


def test_give_up_all_errors_every_open_batch_once() -> None:
    """The deadline gives each open batch one `error`; finished ones get nothing."""
    t = tracker()
    for batch_id in (A, B):
        t.add(batch_id, 0.0)
    t.due(0.0)
    t.observed(A, snapshot("completed", batch_id=A, ready=1), 0.0)
    events = t.give_up_all(WaitTimeoutError("deadline"))
    assert [(e.batch_id, e.kind) for e in events] == [(B, EventKind.ERROR)]
    assert t.give_up_all(WaitTimeoutError("again")) == []


def test_discarded_batch_outcome_is_ignored() -> None:
    """An answer arriving after discard produces nothing."""
    t = tracker()
    t.add(A, 0.0)
    assert t.due(0.0) == [A]
    assert t.discard(A)
    assert t.observed(A, snapshot("completed", ready=1), 1.0) == []
    assert t.tracked_count == 0


def test_add_twice_is_one_batch() -> None:
    """Adding a tracked ID again changes nothing."""
    t = tracker()
    assert t.add(A, 0.0)
    assert not t.add(A, 0.0)
    assert t.due(0.0) == [A]


# -- schedule -------------------------------------------------------------------------


def test_interval_grows_while_idle_and_resets_on_change() -> None:
    """No change multiplies the interval up to the maximum; a change resets it to the minimum."""
    t = tracker()
    t.add(A, 0.0)
    now = 0.0
    read = snapshot("processing", queued=5)
    gaps = []
    for _ in range(5):
        t.due(now)
        t.observed(A, read, now)
        nxt = t.next_wakeup()
        assert nxt is not None
        gaps.append(nxt - now)
        now = nxt
    assert gaps == [10.0, 20.0, 40.0, 80.0, 80.0]
    t.due(now)
    t.observed(A, snapshot("processing", queued=4, ready=1), now)
    assert t.next_wakeup() == now + 10.0


def test_jitter_and_stagger_stay_in_bounds() -> None:
    """Start times spread over the stagger window; intervals within ±jitter."""
    policy = PollPolicy(min_interval=10.0, max_interval=10.0, jitter=0.2, stagger=3.0)
    t = Tracker(policy, strategy=Strategy.PER_ID, rng=random.Random(1))
    ids = [f"{i:024x}" for i in range(200)]
    for batch_id in ids:
        t.add(batch_id, 100.0)
    firsts = [t.tracked(b).next_poll_at for b in ids]  # type: ignore[union-attr]
    assert all(100.0 <= f <= 103.0 for f in firsts)
    assert max(firsts) - min(firsts) > 2.0  # really spread, not a burst
    due = t.due(103.0)
    assert sorted(due) == sorted(ids)  # type: ignore[type-var]
    for batch_id in ids:
        t.observed(batch_id, snapshot("pending", batch_id=batch_id, queued=1), 103.0)
    gaps = [t.tracked(b).next_poll_at - 103.0 for b in ids]  # type: ignore[union-attr]
    assert all(8.0 <= g <= 12.0 for g in gaps)
    assert len({round(g, 6) for g in gaps}) > 100  # no lockstep


def test_rate_limit_pauses_everything() -> None:
    """After a 429 nothing is due until its Retry-After has passed, then the batch retries."""
    t = tracker()
    for batch_id in (A, B):
        t.add(batch_id, 0.0)
    assert sorted(map(str, t.due(0.0))) == [A, B]
    t.failed(A, rate_limit_error(300.0), 1.0)
    t.observed(B, snapshot("pending", batch_id=B, queued=1), 2.0)  # B's next poll is at 12
    assert t.paused_until == 301.0
    assert t.due(200.0) == []
    assert t.next_wakeup() == 301.0
    assert sorted(map(str, t.due(301.0))) == [A, B]


# -- list sweep -----------------------------------------------------------------------


def test_auto_sweeps_with_several_open_batches() -> None:
    """Two or more open batches switch auto mode to the sweep; one batch polls by ID."""
    t = tracker(Strategy.AUTO)
    t.add(A, 0.0)
    assert t.due(0.0) == [A]
    t.observed(A, snapshot("pending", batch_id=A, queued=1), 0.0)
    t.add(B, 1.0)
    assert t.due(1.0) == [SWEEP]
    assert t.sweeping


def test_sweep_refreshes_present_and_gets_the_absent() -> None:
    """Batches in the sweep answer get events; a watched batch absent from it is fetched by ID."""
    t = tracker(Strategy.SWEEP)
    for batch_id in (A, B, C):
        t.add(batch_id, 0.0)
    assert t.due(0.0) == [SWEEP]
    events = t.swept(
        [
            snapshot("processing", batch_id=A, processing=1),
            snapshot("pending", batch_id=B, queued=1),
        ],
        pages=1,
        now=0.0,
    )
    assert [(e.batch_id, e.kind) for e in events] == [(A, "seen"), (B, "seen")]
    assert t.due(0.0) == [C]  # C was not active: one GET to learn how it ended
    (done,) = t.observed(C, snapshot("completed", batch_id=C, ready=1), 0.0)
    assert done.kind is EventKind.DONE
    # Next tick: one sweep covers A and B; no individual polls.
    nxt = t.next_wakeup()
    assert nxt == 10.0
    assert t.due(nxt) == [SWEEP]


def test_sweep_costs_one_request_per_tick_plus_one_per_finish() -> None:
    """Over a run, requests are one sweep per tick plus one GET per batch that finishes."""
    t = tracker(Strategy.SWEEP)
    t.add(A, 0.0)
    t.add(B, 0.0)
    gets = sweeps = 0
    now = 0.0
    a_done_at, b_done_at = 35.0, 70.0
    while t.open_count:
        for action in t.due(now):
            if action is SWEEP:
                sweeps += 1
                active = [
                    snapshot("processing", batch_id=b, processing=1)
                    for b, end in ((A, a_done_at), (B, b_done_at))
                    if now < end
                ]
                t.swept(active, 1, now)
            else:
                gets += 1
                t.observed(action, snapshot("completed", batch_id=action, ready=1), now)
        now = t.next_wakeup() or now
    assert gets == 2
    assert sweeps <= 12


def test_sweep_failure_retries_and_auth_failure_ends_all() -> None:
    """A failed sweep is retried once its suspension ends; an auth failure on it ends every
    open batch."""
    t = tracker(Strategy.SWEEP)
    t.add(A, 0.0)
    t.add(B, 0.0)
    assert t.due(0.0) == [SWEEP]
    assert t.failed(SWEEP, server_error(), 0.0) == []
    suspended = POLICY.max_interval
    assert not t.sweeping or t.due(0.0) != [SWEEP]
    assert t.due(suspended) == [SWEEP]
    nxt = suspended
    error = AuthenticationError(
        status=401, code=None, message=None, headers={}, method="GET", url="/x"
    )
    events = t.failed(SWEEP, error, nxt)
    assert sorted(e.batch_id for e in events) == [A, B]
    assert all(e.kind is EventKind.ERROR for e in events)


def test_refresh_pulls_the_next_poll_forward() -> None:
    """refresh() makes one batch, or the sweep, due now."""
    t = tracker()
    t.add(A, 0.0)
    t.due(0.0)
    t.observed(A, snapshot("pending", queued=1), 0.0)
    assert t.due(5.0) == []
    t.refresh(5.0, A)
    assert t.due(5.0) == [A]


# -- properties -----------------------------------------------------------------------


def _progressions(draw: Any) -> list[object]:
    """A true, monotonic history of one batch of `total` items."""
    total = draw(st.integers(1, 6))
    queued, processing, ready, failed, canceled = total, 0, 0, 0, 0
    status = "pending"
    history = [snapshot(status, queued=total)]
    for step in draw(st.lists(st.sampled_from(["start", "finish", "fail", "cancel"]), max_size=15)):
        if step == "start" and queued:
            queued, processing, status = (
                queued - 1,
                processing + 1,
                "processing" if status == "pending" else status,
            )
        elif step in {"finish", "fail"} and processing:
            processing -= 1
            ready, failed = (ready + 1, failed) if step == "finish" else (ready, failed + 1)
        elif step == "cancel" and status in {"pending", "processing"}:
            canceled, queued, status = canceled + queued, 0, "canceling"
        else:
            continue
        history.append(
            snapshot(
                status,
                queued=queued,
                processing=processing,
                ready=ready,
                failed=failed,
                canceled=canceled,
            )
        )
    if queued == 0 and processing == 0:
        final = "canceled" if status == "canceling" else "completed"
        history.append(snapshot(final, ready=ready, failed=failed, canceled=canceled))
    return list(history)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_invariants_hold_for_any_read_order(data: st.DataObject) -> None:
    """Stale, repeated and reordered reads never produce backward, repeated or post-final events."""
    history = _progressions(data.draw)
    # The server serves reads that lag: any earlier snapshot, never a future one.
    reads = []
    for position in range(len(history)):
        lag = data.draw(st.integers(0, position))
        reads.extend([history[position - lag]] * data.draw(st.integers(1, 2)))
    reads.append(history[-1])
    t = tracker()
    t.add(A, 0.0)
    events: list[Event] = []
    for read in reads:
        events += t.observed(A, read, 0.0)  # type: ignore[arg-type]
    finals = [e for e in events if e.is_final]
    assert len(finals) == (1 if history[-1].is_terminal else 0)  # type: ignore[attr-defined]
    if finals:
        assert events[-1] is finals[0]
        assert finals[0].batch == history[-1]
    for before, after in pairwise(events):
        assert after.previous is before.batch
        assert after.batch is not None
        assert before.batch is not None
        assert not is_stale(before.batch, after.batch)
        assert after.batch != before.batch


def test_refresh_during_a_poll_in_flight_polls_again_at_once() -> None:
    """A refresh asked while the batch's poll is in flight is not lost: it polls again on return."""
    t = tracker()
    t.add(A, 0.0)
    assert t.due(0.0) == [A]
    t.refresh(1.0, A)
    t.observed(A, snapshot("pending", queued=1), 2.0)
    assert t.next_wakeup() == 2.0
    assert t.due(2.0) == [A]


def test_refresh_during_a_sweep_in_flight_sweeps_again() -> None:
    """A refresh asked while a sweep is in flight makes the next sweep due at once."""
    t = tracker(Strategy.SWEEP)
    t.add(A, 0.0)
    t.add(B, 0.0)
    assert t.due(0.0) == [SWEEP]
    t.refresh(1.0)
    t.swept([snapshot("pending", batch_id=b, queued=1) for b in (A, B)], 1, 2.0)
    assert t.due(2.0) == [SWEEP]


def test_a_lease_round_adopts_the_stores_unfinished_batches_and_closes_ones_ended_elsewhere() -> (
    None
):
    """`leases_wanted` with ``resume`` watches what the store holds unfinished; a batch another
    replica ended (acknowledged final) while this one did not hold it closes without an event,
    and the IDs to claim are the open ones, then those held."""
    t = tracker()
    t.add(A, 0.0)
    t.add(B, 0.0)
    records = {
        A: StoredBatch(batch_id=A, snapshot=snapshot("completed", batch_id=A, ready=1), final=True),
        C: StoredBatch(batch_id=C, snapshot=snapshot("processing", batch_id=C, queued=1)),
    }
    wanted = t.leases_wanted(records, held={B}, now=5.0, resume=True)
    assert wanted == [B, C]
    closed = t.tracked(A)
    assert closed is not None
    assert closed.final
    assert t.open_count == 2
    adopted = t.tracked(C)
    assert adopted is not None
    assert adopted.last == records[C].snapshot


def test_a_lease_round_keeps_a_held_batch_that_the_store_calls_ended() -> None:
    """A batch this replica holds is its own to end: a final record does not close it here."""
    t = tracker()
    t.add(A, 0.0)
    records = {A: StoredBatch(batch_id=A, snapshot=None, final=True)}
    assert t.leases_wanted(records, held={A}, now=1.0, resume=False) == [A]
    assert t.open_count == 1


def test_a_batch_taken_over_continues_from_the_stores_view_and_is_polled_now() -> None:
    """`leases_taken` resets a newly held batch to the store's acknowledged snapshot, due now;
    one the store has ended is closed, and one the store does not know is left as it was."""
    t = tracker()
    for batch_id in (A, B, C):
        t.add(batch_id, 0.0)
    kept = snapshot("processing", batch_id=A, queued=1, ready=1)
    records = {
        A: StoredBatch(batch_id=A, snapshot=kept),
        B: StoredBatch(batch_id=B, snapshot=snapshot("completed", batch_id=B), final=True),
    }
    t.leases_taken({A, B, C}, records, now=7.0)
    taken, ended, unknown = t.tracked(A), t.tracked(B), t.tracked(C)
    assert taken is not None
    assert ended is not None
    assert unknown is not None
    assert (taken.last, taken.final, taken.next_poll_at) == (kept, False, 7.0)
    assert ended.final
    assert unknown.last is None
    assert A in t.due(7.0)
