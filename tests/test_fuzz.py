"""Hypothesis fuzzing: decoders, Retry-After parsing, the token bucket, the tracker."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asyncbatch import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    Batch,
    DecodeError,
    EndpointNotFoundError,
    Event,
    EventKind,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    ServerError,
    Strategy,
)
from asyncbatch._budget import TokenBucket
from asyncbatch._events import classify, is_stale
from asyncbatch._models import (
    batch_decoder,
    created_decoder,
    decode_body,
    error_decoder,
    page_decoder,
    result_decoder,
)
from asyncbatch._retry import parse_retry_after
from asyncbatch._tracker import SWEEP, Action, Tracker
from tests._server import CREATE_RESPONSE, LIST_BODY, RESULT_LINES, STATUS_BODIES
from tests._snapshots import snapshot

DECODERS: list[tuple[msgspec.json.Decoder[Any], bytes]] = [
    (batch_decoder, json.dumps(STATUS_BODIES["completed"]).encode()),
    (page_decoder, json.dumps(LIST_BODY).encode()),
    (created_decoder, json.dumps(CREATE_RESPONSE).encode()),
    (result_decoder, RESULT_LINES[0]),
    (error_decoder, b'{"error": {"code": "not_found", "message": "no such batch"}}'),
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


def _decode_or_error(decoder: msgspec.json.Decoder[Any], body: bytes) -> object:
    try:
        return decode_body(decoder, body, "fuzz")
    except DecodeError as exc:
        return exc


def _decodes_or_raises_decode_error(decoder: msgspec.json.Decoder[Any], body: bytes) -> None:
    value = _decode_or_error(decoder, body)
    if isinstance(value, DecodeError):
        assert value.snippet == body[:200]
    if isinstance(value, Batch):  # a decoded snapshot must be usable by everything downstream
        assert isinstance(value.is_terminal, bool)
        assert value.fraction_done >= 0.0 or value.total_items < 0
        classify(None, value)
        classify(value, value)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400))
@example(body=b"[" * 100_000)
@example(body=b'{"batch_id": "' + b"\xff" * 10 + b'"}')
@example(body=b"")
def test_random_bytes_decode_or_raise_decode_error(body: bytes) -> None:
    """Any bytes into every decoder: a value or DecodeError with the snippet, nothing else."""
    for decoder, _ in DECODERS:
        _decodes_or_raises_decode_error(decoder, body)


@settings(max_examples=150, deadline=None)
@given(value=JSON)
def test_random_json_decodes_or_raises_decode_error(value: Any) -> None:
    """Any JSON value (NaN and infinities included) into every decoder: a value or DecodeError."""
    body = json.dumps(value).encode()
    for decoder, _ in DECODERS:
        _decodes_or_raises_decode_error(decoder, body)


def _mutate(value: Any, data: st.DataObject) -> Any:
    """Replace, drop or add one field somewhere in ``value``; recurse into a random child."""
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["replace", "drop", "add", "descend"]))
        changed = dict(value)
        if action == "replace":
            changed[key] = data.draw(JSON)
        elif action == "drop":
            del changed[key]
        elif action == "add":
            changed[data.draw(st.text(max_size=10))] = data.draw(JSON)
        else:
            changed[key] = _mutate(value[key], data)
        return changed
    if isinstance(value, list) and value:
        index = data.draw(st.integers(0, len(value) - 1))
        return [*value[:index], _mutate(value[index], data), *value[index + 1 :]]
    return data.draw(JSON)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_valid_bodies_with_one_field_broken_decode_or_raise_decode_error(
    data: st.DataObject,
) -> None:
    """A real body with one field replaced, dropped or added: a value or DecodeError."""
    decoder, valid = data.draw(st.sampled_from(DECODERS))
    for _ in range(data.draw(st.integers(1, 3))):
        valid = json.dumps(_mutate(json.loads(valid), data)).encode()
    _decodes_or_raises_decode_error(decoder, valid)


@settings(max_examples=100, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "date"]),
        st.text(max_size=40) | st.from_regex(r"-?[0-9]{1,400}(\.[0-9]+)?(e-?[0-9]{1,3})?"),
    )
)
@example(headers={"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT", "date": "Mon, 01 Jan 0001"})
@example(headers={"retry-after": "Mon, 20 Jul 2026 10:01:30 +9959"})
def test_retry_after_parses_to_a_finite_wait_or_none(headers: dict[str, str]) -> None:
    """Any Retry-After, retry-after-ms and Date: None or a finite wait >= 0, never a raise."""
    wait = parse_retry_after(headers)
    assert wait is None or (math.isfinite(wait) and wait >= 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000.0),
    burst=st.floats(1.0, 100.0),
    start=st.floats(0.0, 1e6),
    steps=st.lists(st.floats(0.0, 10.0), max_size=10),
)
@example(rate=10.0, burst=10.0, start=84.4421851525048, steps=[])
def test_waiting_the_named_delay_always_yields_a_token(
    rate: float, burst: float, start: float, steps: list[float]
) -> None:
    """Drain the bucket: each named delay moves the clock, and waiting them out gives a token."""
    bucket = TokenBucket(rate, burst, now=0.0)
    now = start
    for step in [0.0, *steps]:
        now += step
        while bucket.take(now):
            pass
        for _ in range(3):  # float rounding may leave the first wait a hair short
            delay = bucket.delay(now)
            assert delay > 0.0
            assert now + delay > now  # a wait the clock cannot show never ends on virtual time
            now += delay
            if bucket.take(now):
                break
        else:
            pytest.fail(f"no token after three named waits at {now!r}")


# -- the tracker under random interleavings ---------------------------------------------

IDS = [f"{n:024x}" for n in range(1, 5)]


@given(
    status=st.sampled_from(["pending", "processing", "canceling", "completed", "canceled", "new"]),
    counters=st.lists(st.integers(-2, 5), min_size=5, max_size=5),
    total_delta=st.integers(-3, 3),
    floor=st.integers(-1, 3),
)
def test_an_unchanged_snapshot_never_makes_an_event(
    status: str, counters: list[int], total_delta: int, floor: int
) -> None:
    """A poll answering exactly what was delivered before gives no event, whatever the status
    (an unknown one too), the counters (implausible ones too) and the floor: `classify`
    takes that common case first, and this holds it to what its full rules say."""
    queued, processing, ready, failed, canceled = counters
    shot = snapshot(
        status, queued=queued, processing=processing, ready=ready, failed=failed, canceled=canceled
    )
    shot = msgspec.structs.replace(shot, total_items=shot.total_items + total_delta)
    again = batch_decoder.decode(msgspec.json.encode(shot))  # equal, not the same object
    assert again == shot
    assert again is not shot
    assert classify(shot, again, floor) is None


def _history(batch_id: str, items: int, cancel_at: int | None) -> list[Batch]:
    """A true, monotonic history of one batch, ending terminal."""
    shots = [snapshot("pending", batch_id=batch_id, queued=items)]
    for done in range(items + 1):
        if cancel_at is not None and done == cancel_at:
            rest = items - done
            shots.append(snapshot("canceling", batch_id=batch_id, ready=done, canceled=rest))
            shots.append(snapshot("canceled", batch_id=batch_id, ready=done, canceled=rest))
            return shots
        if done < items:
            shots.append(
                snapshot(
                    "processing",
                    batch_id=batch_id,
                    queued=items - done - 1,
                    processing=1,
                    ready=done,
                )
            )
    shots.append(snapshot("completed", batch_id=batch_id, ready=items))
    return shots


class _Run:
    """Drives a `Tracker` like the watcher does and checks every event it returns."""

    def __init__(self, tracker: Tracker, data: st.DataObject) -> None:
        self.tracker = tracker
        self.data = data
        self.now = 0.0
        self.in_flight: list[Action] = []
        self.last: dict[str, Event] = {}
        self.ended: set[str] = set()
        self.histories = {
            b: _history(b, data.draw(st.integers(1, 4)), data.draw(st.none() | st.integers(0, 3)))
            for b in IDS
        }
        self.position = dict.fromkeys(IDS, 0)

    def read(self, batch_id: str) -> Batch:
        """What the server answers now: the true snapshot, or any older one (a stale read)."""
        lag = self.data.draw(st.integers(0, self.position[batch_id]))
        return self.histories[batch_id][self.position[batch_id] - lag]

    def check(self, events: list[Event]) -> None:
        for event in events:
            batch_id = event.batch_id
            assert batch_id not in self.ended, f"{event.kind} after the final event"
            before = self.last.get(batch_id)
            if event.kind not in {EventKind.GONE, EventKind.ERROR}:
                assert event.batch is not None
                assert event.previous is (before.batch if before is not None else None)
                if before is not None and before.batch is not None:
                    assert not is_stale(before.batch, event.batch), "went backwards"
                    assert before.batch != event.batch, "the same snapshot twice"
            self.last[batch_id] = event
            if event.is_final:
                self.ended.add(batch_id)
        assert self.tracker.in_flight_count >= 0
        assert self.tracker.open_count >= 0
        if self.tracker.open_count and not self.tracker.in_flight_count:
            assert self.tracker.next_wakeup() is not None, "open batches but nothing scheduled"

    def step(self) -> None:
        data, t = self.data, self.tracker
        self.now += data.draw(st.floats(0.0, 20.0))
        batch_id = data.draw(st.sampled_from(IDS))
        op = data.draw(
            st.sampled_from(["add", "discard", "refresh", "due", "server", "outcome", "outcome"])
        )
        if op == "add":
            t.add(batch_id, self.now)
        elif op == "discard":
            t.discard(batch_id)
            self.last.pop(batch_id, None)
            self.ended.discard(batch_id)
        elif op == "refresh":
            t.refresh(self.now, data.draw(st.none() | st.just(batch_id)))
        elif op == "due":
            actions = t.due(self.now)
            for action in actions:
                assert action is SWEEP or action not in self.ended, "polled a finished batch"
            self.in_flight += actions
        elif op == "server":
            self.position[batch_id] = min(
                self.position[batch_id] + 1, len(self.histories[batch_id]) - 1
            )
        elif self.in_flight:
            index = data.draw(st.integers(0, len(self.in_flight) - 1))
            self.check(self.outcome(self.in_flight.pop(index)))
            return
        self.check([])

    def outcome(self, action: Action) -> list[Event]:
        return self.sweep_outcome() if action is SWEEP else self.poll_outcome(action)

    def sweep_outcome(self) -> list[Event]:
        data, t, now = self.data, self.tracker, self.now
        kind = data.draw(st.sampled_from(["swept", "failed"]))
        if kind == "swept":
            reads = [self.read(b) for b in IDS]
            active = [r for r in reads if not r.is_terminal and data.draw(st.booleans())]
            return t.swept(active, data.draw(st.integers(1, 3)), now)
        return t.failed(SWEEP, data.draw(_FAILURES), now)

    def poll_outcome(self, action: str) -> list[Event]:
        data, t, now = self.data, self.tracker, self.now
        if data.draw(st.sampled_from(["observed", "observed", "failed"])) == "observed":
            return t.observed(action, self.read(action), now)
        return t.failed(action, data.draw(_FAILURES), now)


def _status_error(cls: type[APIStatusError], status: int, code: str | None) -> APIStatusError:
    return cls(status=status, code=code, message=None, headers={}, method="GET", url="/x")


# One of each kind of failure a watch request can meet (see `_retry.classify_failure`).
_FAILURES = st.sampled_from(
    [
        APIConnectionError("injected"),
        DecodeError("injected", snippet=b"{"),
        _status_error(ServerError, 503, None),
        _status_error(BadRequestError, 400, "parameter_invalid"),
        _status_error(AuthenticationError, 401, "api_key_invalid"),
        _status_error(NotFoundError, 404, "resource_not_exist"),
        _status_error(EndpointNotFoundError, 404, None),
    ]
) | st.builds(
    RateLimitError,
    status=st.just(429),
    code=st.none(),
    message=st.none(),
    headers=st.just({}),
    method=st.just("GET"),
    url=st.just("/x"),
    retry_after=st.none() | st.floats(-5.0, 600.0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), strategy=st.sampled_from(list(Strategy)), seed=st.integers(0, 2**16))
def test_tracker_keeps_its_invariants_under_any_interleaving(
    data: st.DataObject, strategy: Strategy, seed: int
) -> None:
    """Random add/discard/refresh/due calls and outcomes (stale reads, failures, 429s, sweeps):
    at most one final event per batch and nothing after, never backwards or repeated, never a
    finished batch polled, a wakeup always scheduled while batches are open and idle."""
    policy = PollPolicy(min_interval=1.0, max_interval=8.0, stagger=2.0, max_failures=6)
    run = _Run(Tracker(policy, strategy=strategy, rng=random.Random(seed)), data)
    for _ in range(data.draw(st.integers(1, 80))):
        run.step()
