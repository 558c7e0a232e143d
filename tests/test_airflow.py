"""The Airflow trigger, run in-process against the simulator on virtual time.

The connection comes from ``AIRFLOW_CONN_TWELVELABS_DEFAULT`` as in a deployment; nothing of
Airflow or of asyncbatch is mocked. Skipped without Airflow (``make test-airflow`` has it; in CI
``ASYNCBATCH_REQUIRE_AIRFLOW=1`` turns the skip into a failure).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import anyio
import pytest

if os.environ.get("ASYNCBATCH_REQUIRE_AIRFLOW"):
    import airflow  # noqa: F401 - a missing Airflow fails here in CI instead of skipping
pytest.importorskip("airflow", reason="Airflow is not installed: run `make test-airflow`")

from airflow.triggers.base import TriggerEvent

from asyncbatch import Client
from asyncbatch.airflow import TwelveLabsBatchTrigger
from asyncbatch.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "airflow-secret-key-5f1e"
REQUESTS: list[dict[str, Any]] = [
    {
        "video": {"type": "asset_id", "asset_id": f"asset-{n}"},
        "custom_id": f"c-{n}",
        "prompt": {"input_text": "Summarise the video."},
    }
    for n in range(3)
]


@pytest.fixture
async def sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    async with Simulator(api_key=KEY, seed=5, item_seconds=60.0) as simulator:
        connection = {"conn_type": "generic", "host": simulator.base_url, "password": KEY}
        monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", json.dumps(connection))
        yield simulator


async def create(sim: Simulator, count: int = 1) -> list[str]:
    async with Client(api_key=KEY, base_url=sim.base_url) as client:
        return [(await client.batches.create(REQUESTS)).batch_id for _ in range(count)]


async def events_of(trigger: TwelveLabsBatchTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def rebuilt(trigger: TwelveLabsBatchTrigger) -> TwelveLabsBatchTrigger:
    """The trigger as a triggerer rebuilds it: from its serialized form, through JSON."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "asyncbatch.airflow.TwelveLabsBatchTrigger"
    rebuilt = TwelveLabsBatchTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == trigger.serialize()
    return rebuilt


async def test_trigger_yields_one_event_when_every_batch_has_ended(sim: Simulator) -> None:
    """The trigger waits (on virtual time) until every batch ends, then fires once with a plain-JSON
    payload holding each batch's `done` outcome and counters; it creates no batch."""
    ids = await create(sim, 2)
    trigger = TwelveLabsBatchTrigger(ids, min_interval=5.0, max_interval=30.0)
    started = sim.now()
    [event] = await events_of(trigger)
    assert sim.now() - started > 60.0  # it waited for the items, on virtual time
    payload = event.payload
    assert json.loads(json.dumps(payload)) == payload  # plain JSON data
    assert payload["completed"] is True
    assert set(payload["batches"]) == set(ids)
    for batch_id, outcome in payload["batches"].items():
        assert outcome["batch_id"] == batch_id
        assert outcome["event"] == "done"
        assert outcome["status"] == "completed"
        assert outcome["error"] is None
        assert outcome["total_items"] == outcome["ready_items"] == 3
        assert sim.batch(batch_id)["status"] == "completed"
    assert len(sim.batch_ids()) == 2  # the trigger created nothing


async def test_a_canceled_batch_is_reported_as_not_completed(sim: Simulator) -> None:
    """A batch that ends `canceled` makes the payload's `completed` false and carries its status."""
    [batch_id] = await create(sim)
    sim.cancel_batch(batch_id)
    [event] = await events_of(TwelveLabsBatchTrigger([batch_id]))
    assert event.payload["completed"] is False
    assert event.payload["batches"][batch_id]["status"] == "canceled"


async def test_a_missing_batch_is_gone_with_its_error(sim: Simulator) -> None:
    """An unknown batch ID ends `gone` with a NotFoundError, and `completed` is false."""
    missing = "0" * 24
    [event] = await events_of(TwelveLabsBatchTrigger([missing]))
    outcome = event.payload["batches"][missing]
    assert outcome["event"] == "gone"
    assert outcome["error"]["type"] == "NotFoundError"
    assert event.payload["completed"] is False


async def test_the_end_time_bounds_the_wait(sim: Simulator) -> None:
    """Past `end_time` the trigger stops waiting and reports a WaitTimeoutError outcome for the
    unfinished batch."""
    [batch_id] = await create(sim)
    started = sim.now()
    [event] = await events_of(TwelveLabsBatchTrigger([batch_id], end_time=time.time() + 30.0))
    assert sim.now() - started < 60.0
    outcome = event.payload["batches"][batch_id]
    assert outcome["event"] == "error"
    assert outcome["error"]["type"] == "WaitTimeoutError"


async def test_a_wrong_key_in_the_connection_is_an_error_outcome_without_the_key(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection holding a rejected key gives an AuthenticationError outcome, and the payload
    never contains that key."""
    [batch_id] = await create(sim)
    wrong = "wrong-key-7c2d"
    connection = {"conn_type": "generic", "host": sim.base_url, "password": wrong}
    monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", json.dumps(connection))
    [event] = await events_of(TwelveLabsBatchTrigger([batch_id]))
    outcome = event.payload["batches"][batch_id]
    assert outcome["error"]["type"] == "AuthenticationError"
    assert wrong not in json.dumps(event.payload)


async def test_a_connection_without_password_says_where_the_key_goes(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection with no password gives a ConfigurationError outcome naming the connection
    that lacks it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_TWELVELABS_DEFAULT",
        json.dumps({"conn_type": "generic", "host": sim.base_url}),
    )
    [batch_id] = await create(sim)
    [event] = await events_of(TwelveLabsBatchTrigger([batch_id]))
    error = event.payload["batches"][batch_id]["error"]
    assert error["type"] == "ConfigurationError"
    assert "'twelvelabs_default' has no password" in error["message"]


async def test_serialized_trigger_holds_ids_and_options_never_the_key(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """`serialize()` holds exactly the IDs and options; a trigger rebuilt from it through JSON
    still completes, and the key shows in no kwargs, repr, event or log line."""
    [batch_id] = await create(sim)
    end = time.time() + 3600.0
    trigger = TwelveLabsBatchTrigger(
        [batch_id], conn_id="twelvelabs_default", end_time=end, min_interval=7.0, max_interval=70.0
    )
    _, kwargs = trigger.serialize()
    assert kwargs == {
        "batch_ids": [batch_id],
        "conn_id": "twelvelabs_default",
        "end_time": end,
        "min_interval": 7.0,
        "max_interval": 70.0,
        "cancel_on_kill": False,
        "wait_for": "all",
    }
    with caplog.at_level(logging.DEBUG):
        [event] = await events_of(rebuilt(trigger))
    shown = [json.dumps(kwargs), repr(trigger), repr(event), caplog.text]
    assert all(KEY not in text for text in shown)
    assert event.payload["completed"] is True


async def test_a_restarted_trigger_resumes_from_its_serialized_form_without_duplicating(
    sim: Simulator,
) -> None:
    """A trigger closed mid-wait and rebuilt from its serialized form waits on the same batches
    to the end, creating none again."""
    ids = await create(sim, 2)
    first = TwelveLabsBatchTrigger(ids, min_interval=5.0, end_time=time.time() + 86_400.0)
    runs = cast(AsyncGenerator[TriggerEvent, None], first.run())
    # The triggerer dies while the batches run: the generator is closed without an event.
    with anyio.move_on_after(20.0) as scope:
        await runs.__anext__()
    assert scope.cancelled_caught
    await runs.aclose()
    assert all(sim.batch(batch_id)["status"] != "completed" for batch_id in ids)
    [event] = await events_of(rebuilt(first))
    assert event.payload["completed"] is True
    assert sorted(sim.batch_ids()) == sorted(ids)  # nothing created again


async def test_wait_for_any_fires_when_the_first_batch_ends_with_only_that_one(
    sim: Simulator,
) -> None:
    """With `wait_for="any"` the trigger fires on the first batch to end, reporting only that one
    while the other keeps running."""
    first, second = await create(sim, 2)
    sim.cancel_batch(second)
    trigger = rebuilt(TwelveLabsBatchTrigger([first, second], min_interval=5.0, wait_for="any"))
    assert trigger.serialize()[1]["wait_for"] == "any"
    [event] = await events_of(trigger)
    assert list(event.payload["batches"]) == [second]
    assert event.payload["batches"][second]["status"] == "canceled"
    assert sim.batch(first)["status"] not in ("completed", "failed", "canceled", "expired")
    [event] = await events_of(TwelveLabsBatchTrigger([first], wait_for="any"))
    assert event.payload["batches"][first]["status"] == "completed"


def test_bad_batch_ids_are_refused_when_the_trigger_is_built() -> None:
    """A bad `wait_for`, a malformed ID, a bare string or an empty list is refused with a typed
    error when the trigger is built, not later in the triggerer."""
    with pytest.raises(ValueError, match='"all" or "any"'):
        TwelveLabsBatchTrigger(["0" * 24], wait_for="some")
    with pytest.raises(ValueError, match="24 hex"):
        TwelveLabsBatchTrigger(["not-an-id"])
    with pytest.raises(TypeError):
        TwelveLabsBatchTrigger("0" * 24)
    with pytest.raises(ValueError, match="empty"):
        TwelveLabsBatchTrigger([])
