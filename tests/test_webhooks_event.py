"""WebhookEvent decoding and which batches a delivery refreshes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from asyncbatch.webhooks import (
    REFRESH_ALL,
    WebhookEvent,
    WebhookEventType,
    decode_event,
    refresh_targets,
)

BATCH = "68f4ddaf8aaa60d33df0e800"
TASK = "68f4ddaf8aaa60d33df0e900"


def event(type_: str, data: dict[str, Any]) -> WebhookEvent:
    """An event as it would decode from the wire."""
    body = {"id": "whe_1", "created_at": "2026-07-20T10:40:00Z", "type": type_, "data": data}
    return decode_event(msgspec.json.encode(body))


def test_the_documented_example_decodes() -> None:
    """The reference's example delivery decodes with an aware timestamp and its data intact."""
    decoded = decode_event(
        b'{"id":"whe_0123456789abcdef0123456789abcdef","created_at":"2026-07-20T10:40:00Z",'
        b'"type":"analyze.task.ready","data":{"id":"68f4ddaf8aaa60d33df0e900",'
        b'"custom_id":"summary-001","status":"ready"}}'
    )
    assert decoded.created_at == datetime(2026, 7, 20, 10, 40, tzinfo=UTC)
    assert decoded.type == WebhookEventType.ANALYZE_TASK_READY
    assert decoded.is_task_event
    assert decoded.data == {"id": TASK, "custom_id": "summary-001", "status": "ready"}


def test_unknown_types_and_fields_decode() -> None:
    """A newer API's event type and extra envelope fields do not break decoding."""
    decoded = decode_event(
        b'{"id":"whe_2","created_at":"2026-07-20T10:40:00+02:00","type":"analyze.video.moved",'
        b'"api_version":"v9","data":{"anything":[1,2]}}'
    )
    assert decoded.type == "analyze.video.moved"
    assert not decoded.is_task_event
    assert decoded.created_at.utcoffset() is not None


def test_data_defaults_to_empty() -> None:
    """An event without ``data`` decodes with an empty mapping and refreshes nothing."""
    decoded = decode_event(b'{"id":"whe_3","created_at":"2026-07-20T10:40:00Z","type":"ping"}')
    assert decoded.data == {}
    assert refresh_targets(decoded) == ()


@pytest.mark.parametrize(
    "type_", ["analyze.task.ready", "analyze.task.failed", "analyze.task.canceled"]
)
def test_task_events_refresh_everything(type_: str) -> None:
    """A task event names no batch, so every open batch is refreshed (one list sweep)."""
    assert refresh_targets(event(type_, {"id": TASK, "status": "ready"})) is REFRESH_ALL


def test_a_task_event_id_is_never_taken_for_a_batch_id() -> None:
    """``data.id`` of a task event is a task ID, even though it is 24 hex digits too."""
    assert event("analyze.task.ready", {"id": TASK}).batch_id is None
    assert event("index.task.ready", {"id": TASK}).batch_id is None


@pytest.mark.parametrize(
    "data",
    [
        {"batch_id": BATCH, "status": "completed", "total_items": 4},
        {"id": BATCH, "status": "completed"},
    ],
    ids=["batch_id", "id"],
)
def test_an_assumed_batch_event_refreshes_its_batch(data: dict[str, Any]) -> None:
    """Our guess at the batch notification (data = the batch object) refreshes that batch only."""
    batch_event = event(WebhookEventType.ANALYZE_BATCH_COMPLETED, data)
    assert batch_event.batch_id == BATCH
    assert refresh_targets(batch_event) == (BATCH,)


def test_any_type_naming_a_batch_refreshes_it() -> None:
    """The batch event's real type is unknown, so any type whose data names a batch counts."""
    assert refresh_targets(event("batch.finished", {"batch_id": BATCH})) == (BATCH,)
    assert refresh_targets(event("analyze.task.ready", {"batch_id": BATCH})) is REFRESH_ALL


def test_a_batch_event_without_a_readable_id_refreshes_everything() -> None:
    """An ``analyze.batch.*`` event whose shape differs from our guess still triggers a sweep."""
    assert refresh_targets(event("analyze.batch.completed", {"batch": {"x": 1}})) is REFRESH_ALL
    assert refresh_targets(event("analyze.batch.completed", {"batch_id": "nope"})) is REFRESH_ALL


def test_index_and_unrelated_events_refresh_nothing() -> None:
    """Indexing events and unknown types without a batch ID leave the watcher alone."""
    assert refresh_targets(event("index.task.ready", {"id": TASK})) == ()
    assert refresh_targets(event("something.else", {"id": "not-a-batch"})) == ()
