"""The simulator's batch model on a ManualClock, without HTTP or an event loop."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncbatch.testing import ManualClock, ScaledClock, Simulator, SimulatorError
from asyncbatch.testing._sim_validate import parse_create

KEY = "model-test-key"
HEX24 = re.compile(r"[0-9a-f]{24}")
STATUS_ORDER = {"pending": 0, "processing": 1, "canceling": 2}
COUNTERS = ("queued_items", "processing_items", "ready_items", "failed_items", "canceled_items")


def _sim(clock: ManualClock, **options: Any) -> Simulator:
    return Simulator(api_key=KEY, clock=clock, **options)


def _request(i: int, **extra: Any) -> dict[str, Any]:
    return {"video": {"type": "asset_id", "asset_id": f"asset-{i}"}, "custom_id": f"c-{i}", **extra}


def _run_until_terminal(sim: Simulator, clock: ManualClock, batch_id: str) -> dict[str, Any]:
    for _ in range(10_000):
        batch = sim.batch(batch_id)
        if batch["status"] in {"completed", "canceled", "expired"}:
            return batch
        clock.advance(1)
    raise AssertionError("the batch never finished")


def test_a_batch_goes_pending_processing_completed() -> None:
    """A new batch is pending, then processing, then completed with completed_at at the end."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=10, items_at_once=2)
    created = sim.create_batch(5)
    assert created["status"] == "pending"
    assert sim.batch(created["batch_id"])["queued_items"] == 5
    seen: list[str] = []
    for _ in range(200):
        batch = sim.batch(created["batch_id"])
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        clock.advance(0.5)
    assert seen == ["pending", "processing", "completed"]
    final = sim.batch(created["batch_id"])
    assert final["ready_items"] == 5
    assert final["completed_at"] > final["created_at"]
    assert "canceled_at" not in final
    assert "expired_at" not in final


def test_only_a_few_items_of_a_batch_run_at_once() -> None:
    """processing_items never exceeds items_at_once."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=5, items_at_once=3)
    batch_id = sim.create_batch(20)["batch_id"]
    peak = 0
    while sim.batch(batch_id)["status"] != "completed":
        peak = max(peak, sim.batch(batch_id)["processing_items"])
        clock.advance(0.25)
    assert peak == 3


def test_created_body_pairs_items_with_requests_in_order() -> None:
    """The 201 body has 24-hex IDs, expires_at 24 h later, and items in request order."""
    sim = _sim(ManualClock())
    created = sim.create_batch([_request(0), {"video": {"type": "asset_id", "asset_id": "x"}}])
    assert HEX24.fullmatch(created["batch_id"])
    assert [i["custom_id"] for i in created["items"]] == ["c-0", None]
    assert all(HEX24.fullmatch(i["task_id"]) for i in created["items"])
    assert created["created_at"] == "2026-01-01T00:00:00.000Z"
    assert created["expires_at"] == "2026-01-02T00:00:00.000Z"
    assert created["total_items"] == 2


def test_failures_carry_a_message_and_only_failed_lines_have_error() -> None:
    """With failures on, failed lines carry error.message; ready lines carry data; no mixing."""
    clock = ManualClock()
    sim = _sim(clock, item_failure_rate=0.5, seed=3)
    batch_id = sim.create_batch(40)["batch_id"]
    final = _run_until_terminal(sim, clock, batch_id)
    lines = sim.results(batch_id)
    assert final["status"] == "completed"
    assert 0 < final["failed_items"] < 40
    for line in lines:
        assert ("data" in line) == (line["status"] == "ready")
        assert ("error" in line) == (line["status"] == "failed")
        if line["status"] == "failed":
            assert line["error"]["message"]
    assert sum(line["status"] == "failed" for line in lines) == final["failed_items"]


def test_results_mid_run_list_queued_and_processing_items_without_data() -> None:
    """Results while processing give one line per item; queued/processing lines are bare."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=10, items_at_once=2, pending_seconds=1)
    batch_id = sim.create_batch(6)["batch_id"]
    clock.advance(3)
    lines = sim.results(batch_id)
    assert [line["custom_id"] for line in lines] == [f"item-{i}" for i in range(6)]
    statuses = [line["status"] for line in lines]
    assert statuses.count("processing") == 2
    assert statuses.count("queued") == 4
    assert all(set(line) == {"task_id", "custom_id", "status"} for line in lines)


def test_time_based_metadata_data_is_json_text_keyed_by_segment_id() -> None:
    """A ready time_based_metadata line's data.data is a JSON string keyed by definition id."""
    clock = ManualClock()
    sim = _sim(clock)
    batch_id = sim.create_batch(1, analysis_mode="time_based_metadata")["batch_id"]
    _run_until_terminal(sim, clock, batch_id)
    (line,) = sim.results(batch_id)
    segments = json.loads(line["data"]["data"])
    assert list(segments) == ["scenes"]
    assert {"start_time", "end_time", "metadata"} <= set(segments["scenes"][0])


def test_cancel_cancels_queued_items_and_lets_processing_ones_finish() -> None:
    """Cancel: canceling at once, queued items canceled, running ones end ready, then canceled."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=10, items_at_once=2, pending_seconds=1)
    batch_id = sim.create_batch(6)["batch_id"]
    clock.advance(4)
    answer = sim.cancel_batch(batch_id)
    assert answer["status"] == "canceling"
    assert (answer["queued_items"], answer["processing_items"], answer["canceled_items"]) == (
        0,
        2,
        4,
    )
    final = _run_until_terminal(sim, clock, batch_id)
    assert final["status"] == "canceled"
    assert (final["ready_items"], final["canceled_items"], final["processing_items"]) == (2, 4, 0)
    assert "canceled_at" in final
    assert "completed_at" not in final


def test_cancel_of_a_pending_batch_is_canceling_then_canceled() -> None:
    """A batch canceled before any item starts is canceling, then canceled with all items."""
    clock = ManualClock()
    sim = _sim(clock, pending_seconds=5, cancel_seconds=1)
    batch_id = sim.create_batch(3)["batch_id"]
    assert sim.cancel_batch(batch_id)["status"] == "canceling"
    assert sim.cancel_batch(batch_id)["status"] == "canceling"  # a second cancel is a no-op
    clock.advance(1)
    final = sim.batch(batch_id)
    assert (final["status"], final["canceled_items"]) == ("canceled", 3)


@pytest.mark.parametrize("ending", ["completed", "canceled", "expired"])
def test_cancel_of_a_terminal_batch_is_409_naming_the_status(ending: str) -> None:
    """Canceling a finished batch raises 409 batch_completed / batch_canceled / batch_expired."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=10 if ending != "expired" else 10_000, expire_after=3600)
    batch_id = sim.create_batch(2)["batch_id"]
    if ending == "canceled":
        sim.cancel_batch(batch_id)
    if ending == "expired":
        sim.age_batch(batch_id, 3600)
    else:
        _run_until_terminal(sim, clock, batch_id)
    assert sim.batch(batch_id)["status"] == ending
    with pytest.raises(SimulatorError) as caught:
        sim.cancel_batch(batch_id)
    assert (caught.value.status, caught.value.code) == (409, f"batch_{ending}")


def test_expiry_cancels_unfinished_items_and_keeps_finished_ones() -> None:
    """At expires_at a slow batch becomes expired: done items stay, the rest are canceled."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=100, items_at_once=1, pending_seconds=1, expire_after=250)
    batch_id = sim.create_batch(5)["batch_id"]
    clock.advance(249)
    assert sim.batch(batch_id)["status"] == "processing"
    clock.advance(1)
    final = sim.batch(batch_id)
    assert final["status"] == "expired"
    assert final["expired_at"] == final["expires_at"]
    assert final["ready_items"] >= 1
    assert final["ready_items"] + final["canceled_items"] == 5
    assert final["queued_items"] == final["processing_items"] == 0


def test_a_canceling_batch_can_expire() -> None:
    """An item still running at expires_at turns a canceling batch into expired."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=1000, items_at_once=1, pending_seconds=1, expire_after=600)
    batch_id = sim.create_batch(2)["batch_id"]
    clock.advance(10)
    assert sim.cancel_batch(batch_id)["status"] == "canceling"
    clock.advance(590)
    final = sim.batch(batch_id)
    assert (final["status"], final["canceled_items"]) == ("expired", 2)


def test_delete_needs_a_terminal_batch_and_then_it_is_gone() -> None:
    """Deleting a running batch is 409 batch_not_terminal; after it ends, delete makes it 404."""
    clock = ManualClock()
    sim = _sim(clock)
    batch_id = sim.create_batch(1)["batch_id"]
    with pytest.raises(SimulatorError) as caught:
        sim.delete_batch(batch_id)
    assert (caught.value.status, caught.value.code) == (409, "batch_not_terminal")
    _run_until_terminal(sim, clock, batch_id)
    sim.delete_batch(batch_id)
    with pytest.raises(SimulatorError) as gone:
        sim.batch(batch_id)
    assert gone.value.status == 404


def test_a_batch_is_gone_after_the_retention_period() -> None:
    """Thirty days after creation a batch answers 404 and leaves the list."""
    clock = ManualClock()
    sim = _sim(clock)
    batch_id = sim.create_batch(1)["batch_id"]
    sim.age_batch(batch_id, 30 * 86_400 - 1)
    assert sim.batch(batch_id)["status"] == "completed"
    sim.age_batch(batch_id, 1)
    with pytest.raises(SimulatorError):
        sim.batch(batch_id)
    assert sim.batch_ids() == []


def test_the_sixth_active_batch_is_refused_with_429() -> None:
    """Five active batches fill the account; the sixth is 429 until one ends."""
    clock = ManualClock()
    sim = _sim(clock, item_seconds=10)
    first = sim.create_batch(1)["batch_id"]
    for _ in range(4):
        sim.create_batch(1)
    with pytest.raises(SimulatorError) as caught:
        sim.create_batch(1)
    assert (caught.value.status, caught.value.code) == (429, "too_many_requests")
    sim.cancel_batch(first)  # canceling still counts as active
    with pytest.raises(SimulatorError):
        sim.create_batch(1)
    _run_until_terminal(sim, clock, first)
    assert sim.create_batch(1)["status"] == "pending"


def test_the_same_seed_gives_the_same_run() -> None:
    """Two simulators with one seed give equal IDs, timelines and results; another seed differs."""

    def run(seed: int) -> list[Any]:
        clock = ManualClock()
        sim = _sim(clock, seed=seed, item_failure_rate=0.3)
        batch_id = sim.create_batch(8)["batch_id"]
        snapshots: list[Any] = []
        for _ in range(40):
            snapshots.append(sim.batch(batch_id))
            clock.advance(2)
        return [*snapshots, sim.results(batch_id)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_missing_and_unready_assets_answer_404_and_409() -> None:
    """Assets named missing or unready refuse the batch with 404 and 409."""
    sim = _sim(ManualClock(), missing_assets={"gone"}, unready_assets={"busy"})
    for asset, status in (("gone", 404), ("busy", 409)):
        with pytest.raises(SimulatorError) as caught:
            sim.create_batch([{"video": {"type": "asset_id", "asset_id": asset}}])
        assert caught.value.status == status
    assert sim.batch_ids() == []


def test_failing_assets_fail_and_leave_the_other_items_as_the_seed_had_them() -> None:
    """Items of assets named failing end `failed` (asset_unavailable); every other item keeps
    the fate the same seed gives it without the option."""

    def finished(**options: Any) -> list[dict[str, Any]]:
        clock = ManualClock()
        sim = _sim(clock, seed=5, item_failure_rate=0.3, **options)
        batch_id = sim.create_batch([_request(i) for i in range(8)])["batch_id"]
        _run_until_terminal(sim, clock, batch_id)
        return sim.results(batch_id)

    plain, named = finished(), finished(failing_assets={"asset-1", "asset-6"})
    for index, (before, after) in enumerate(zip(plain, named, strict=True)):
        if index in {1, 6}:
            assert after["status"] == "failed"
            assert after["error"]["code"] == "asset_unavailable"
        else:
            assert after == before


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": "pegasus1.5",
        "analysis_mode": "general",
        "defaults": {"prompt": {"input_text": "Summarise."}},
        "requests": [_request(0)],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


SEGMENTS = {"type": "segment_definitions", "segment_definitions": [{"id": "s"}]}
INVALID_BODIES = {
    "not an object": [],
    "no model": _body(model_name=None),
    "wrong model": _body(model_name="pegasus1.2"),
    "no mode": _body(analysis_mode=None),
    "unknown mode": _body(analysis_mode="summary"),
    "no requests": _body(requests=None),
    "empty requests": _body(requests=[]),
    "too many requests": _body(requests=[_request(i) for i in range(1001)]),
    "no video": _body(requests=[{"custom_id": "a"}]),
    "video by url": _body(requests=[{"video": {"type": "url", "url": "http://x"}}]),
    "malformed asset": _body(requests=[{"video": {"type": "asset_id", "asset_id": "a b"}}]),
    "empty custom_id": _body(requests=[_request(0, custom_id="")]),
    "custom_id too long": _body(requests=[_request(0, custom_id="a" * 65)]),
    "custom_id bad char": _body(requests=[_request(0, custom_id="a.b")]),
    "duplicate custom_id": _body(requests=[_request(0), _request(0)]),
    "general without prompt": _body(defaults=None),
    "general with segments": _body(
        defaults={"prompt": {"input_text": "x"}, "response_format": SEGMENTS}
    ),
    "tbm with prompt": _body(
        analysis_mode="time_based_metadata",
        defaults={"prompt": {"input_text": "x"}, "response_format": SEGMENTS},
    ),
    "tbm without segments": _body(analysis_mode="time_based_metadata", defaults=None),
    "temperature above 1": _body(requests=[_request(0, temperature=1.5)]),
    "max_tokens too low": _body(requests=[_request(0, max_tokens=100)]),
    "segment duration below 2": _body(
        analysis_mode="time_based_metadata",
        defaults={"response_format": SEGMENTS, "min_segment_duration": 1},
    ),
    "start after end": _body(requests=[_request(0, start_time=10, end_time=5)]),
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_create_bodies_are_400_and_create_nothing(body: object) -> None:
    """Each documented create rule refuses the body with 400."""
    with pytest.raises(SimulatorError) as caught:
        parse_create(body)
    assert caught.value.status == 400
    assert caught.value.code in {"parameter_invalid", "parameter_not_provided"}


def test_the_limits_themselves_are_accepted() -> None:
    """1,000 requests and a 64-character custom_id are within the rules."""
    sim = _sim(ManualClock())
    requests = [_request(i) for i in range(999)] + [_request(0, custom_id="a" * 64)]
    assert sim.create_batch(requests)["total_items"] == 1000


def test_manual_and_scaled_clocks() -> None:
    """ManualClock moves only forward; ScaledClock runs `scale` times its base from 0."""
    base = ManualClock(100.0)
    scaled = ScaledClock(60.0, base=base)
    assert scaled() == 0.0
    base.advance(2)
    assert scaled() == 120.0
    with pytest.raises(ValueError, match="back"):
        base.advance(-1)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 30),
    failure_rate=st.sampled_from([0.0, 0.2, 1.0]),
    steps=st.lists(st.tuples(st.floats(0, 400), st.booleans()), min_size=1, max_size=25),
)
def test_every_snapshot_keeps_the_documented_invariants(
    seed: int, size: int, failure_rate: float, steps: list[tuple[float, bool]]
) -> None:
    """Under any timeline and cancels: counters add up, status and done counts never go back."""
    clock = ManualClock()
    sim = _sim(clock, seed=seed, item_failure_rate=failure_rate, item_seconds=60, expire_after=3000)
    batch_id = sim.create_batch(size)["batch_id"]
    previous: dict[str, Any] | None = None
    for step, cancel in steps:
        clock.advance(step)
        if cancel and sim.batch(batch_id)["status"] in {"pending", "processing"}:
            sim.cancel_batch(batch_id)
        batch = sim.batch(batch_id)
        _check_snapshot(batch, size)
        lines = sim.results(batch_id)
        for name in COUNTERS:
            status = name.removesuffix("_items")
            assert sum(line["status"] == status for line in lines) == batch[name]
        if previous is not None:
            _check_progress(previous, batch)
        previous = batch


def _check_snapshot(batch: dict[str, Any], size: int) -> None:
    status = batch["status"]
    assert sum(batch[name] for name in COUNTERS) == batch["total_items"] == size
    for ending in ("completed", "canceled", "expired"):
        assert (f"{ending}_at" in batch) == (status == ending)
    if status in {"completed", "canceled", "expired"}:
        assert batch["queued_items"] == batch["processing_items"] == 0
    if status == "completed":
        assert batch["canceled_items"] == 0
    if status == "canceling":
        assert batch["queued_items"] == 0


def _check_progress(before: dict[str, Any], after: dict[str, Any]) -> None:
    if before["status"] in STATUS_ORDER:
        rank = STATUS_ORDER.get(after["status"], 3)
        assert rank >= STATUS_ORDER[before["status"]]
    else:
        assert after["status"] == before["status"]
    for name in ("ready_items", "failed_items", "canceled_items"):
        assert after[name] >= before[name]


@pytest.mark.parametrize(
    "options",
    [
        {"api_key": ""},
        {"start": datetime(2026, 1, 1)},  # naive: refused
        {"item_failure_rate": 1.5},
        {"item_seconds": 0},
        {"items_at_once": 0},
    ],
)
def test_nonsense_options_are_refused(options: dict[str, Any]) -> None:
    """An empty key, a naive start, a rate above 1 or a zero duration/slot count: ValueError."""
    with pytest.raises(ValueError, match=r"."):
        Simulator(**{"api_key": KEY, **options})


def test_helpers_404_for_unknown_batches_and_removal_works_in_any_status() -> None:
    """remove_batch makes even a running batch vanish; helpers on it then raise 404."""
    sim = _sim(ManualClock())
    batch_id = sim.create_batch(2)["batch_id"]
    sim.remove_batch(batch_id)
    for helper in (sim.batch, sim.results, sim.cancel_batch, sim.delete_batch):
        with pytest.raises(SimulatorError) as caught:
            helper(batch_id)
        assert (caught.value.status, caught.value.code) == (404, "resource_not_exist")
