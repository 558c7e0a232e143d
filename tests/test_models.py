"""Decoding the reference's example bodies into the model structs, and the struct helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from asyncbatch import Batch, BatchStatus, ItemStatus, ResultItem
from asyncbatch._models import (
    batch_decoder,
    created_decoder,
    error_decoder,
    page_decoder,
    result_decoder,
)
from tests._server import (
    BATCH_ID,
    CREATE_RESPONSE,
    FLAT_429,
    LIST_BODY,
    RESULT_LINES,
    STATUS_BODIES,
    TIME_BASED_LINE,
)


def _batch(body: dict[str, Any]) -> Batch:
    return batch_decoder.decode(json.dumps(body).encode())


@pytest.mark.parametrize("status", list(STATUS_BODIES))
def test_every_status_example_decodes(status: str) -> None:
    """Each status body of reference 8.2 decodes with its counters and aware timestamps."""
    body = STATUS_BODIES[status]
    batch = _batch(body)
    assert batch.batch_id == BATCH_ID
    assert batch.status == BatchStatus(status)
    assert batch.total_items == 4
    assert batch.created_at == datetime(2026, 7, 20, 10, tzinfo=UTC)
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    counters = (batch.queued_items, batch.processing_items, batch.ready_items)
    assert counters == (body["queued_items"], body["processing_items"], body["ready_items"])
    assert (batch.failed_items, batch.canceled_items) == (
        body["failed_items"],
        body["canceled_items"],
    )
    assert batch.is_terminal is (status in {"completed", "canceled", "expired"})


def test_terminal_timestamps_decode_only_where_sent() -> None:
    """completed_at / canceled_at / expired_at are set only on their own status."""
    completed = _batch(STATUS_BODIES["completed"])
    canceled = _batch(STATUS_BODIES["canceled"])
    expired = _batch(STATUS_BODIES["expired"])
    assert completed.completed_at == datetime(2026, 7, 20, 11, tzinfo=UTC)
    assert (completed.canceled_at, completed.expired_at) == (None, None)
    assert canceled.canceled_at == datetime(2026, 7, 20, 10, 20, tzinfo=UTC)
    assert expired.expired_at == datetime(2026, 7, 21, 10, tzinfo=UTC)
    assert _batch(STATUS_BODIES["processing"]).webhooks is None


def test_webhook_deliveries_decode() -> None:
    """The webhooks array decodes, with last_error only on a failed delivery."""
    (ok,) = _batch(STATUS_BODIES["completed"]).webhooks or ()
    (failed,) = _batch(STATUS_BODIES["expired"]).webhooks or ()
    assert (ok.url, ok.delivered, ok.attempts, ok.last_error) == (
        "https://example.com/tl-hook",
        True,
        1,
        None,
    )
    assert (failed.delivered, failed.attempts, failed.last_error) == (
        False,
        3,
        "connection refused",
    )


def test_list_page_decodes() -> None:
    """The list example of reference 8.3 decodes into batches and page_info."""
    page = page_decoder.decode(json.dumps(LIST_BODY).encode())
    assert [b.status for b in page.data] == ["processing"]
    info = page.page_info
    assert (info.page, info.limit_per_page, info.total_page, info.total_results) == (1, 10, 1, 1)


def test_list_page_without_page_info_decodes() -> None:
    """page_info is optional: a page without it decodes with every field None."""
    page = page_decoder.decode(b'{"data":[]}')
    assert page.data == ()
    assert page.page_info.total_page is None


def test_create_response_decodes() -> None:
    """The 201 example of reference 8.1 decodes, a null custom_id included."""
    created = created_decoder.decode(json.dumps(CREATE_RESPONSE).encode())
    assert created.batch_id == BATCH_ID
    assert created.status == BatchStatus.PENDING
    assert created.total_items == 3
    assert [i.custom_id for i in created.items] == ["summary-001", "summary-002", None]
    assert created.items[0].task_id == "68f4ddaf8aaa60d33df0e900"


def test_results_lines_decode_in_every_item_status() -> None:
    """Each results line of reference 8.4: data only when ready, error only when failed."""
    items = [result_decoder.decode(line) for line in RESULT_LINES]
    assert [i.status for i in items] == [
        ItemStatus.READY,
        ItemStatus.FAILED,
        ItemStatus.PROCESSING,
        ItemStatus.QUEUED,
        ItemStatus.CANCELED,
    ]
    ready, failed, *rest = items
    assert ready.data is not None
    assert ready.data.data == "This video covers the keynote launch..."
    assert ready.data.usage is not None
    assert (ready.data.usage.output_tokens, ready.data.usage.input_tokens) == (150, 45)
    assert ready.error is None
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (
        "asset_unavailable",
        "The asset could not be read.",
    )
    assert all(i.data is None and i.error is None for i in rest)
    assert rest[-1].custom_id is None


def test_time_based_metadata_line_keeps_data_as_json_text() -> None:
    """In time_based_metadata mode data.data is a JSON string the caller can parse."""
    item = result_decoder.decode(TIME_BASED_LINE)
    assert item.data is not None
    assert item.data.usage is not None
    assert item.data.usage.input_tokens is None
    assert json.loads(item.data.data)["scenes"][0]["end_time"] == 12.5


def test_item_error_without_code_decodes() -> None:
    """Only message is guaranteed on an item error; code may be missing."""
    item = result_decoder.decode(
        b'{"task_id":"t","custom_id":"a","status":"failed","error":{"message":"no"}}'
    )
    assert item.error is not None
    assert (item.error.code, item.error.message) == (None, "no")


def test_nested_and_flat_error_bodies_give_the_same_parts() -> None:
    """Both error shapes yield (code, message)."""
    nested = error_decoder.decode(
        b'{"error":{"code":"batch_not_terminal","message":"still processing","details":{"a":1}}}'
    )
    flat = error_decoder.decode(FLAT_429.payload())
    assert nested.parts() == ("batch_not_terminal", "still processing")
    code, message = flat.parts()
    assert code == "too_many_requests"
    assert message is not None
    assert message.startswith("You have exceeded")


def test_unknown_fields_are_ignored() -> None:
    """A newer API's extra fields, at any depth, do not break decoding."""
    body = {**STATUS_BODIES["completed"], "new_top_level": {"x": [1]}}
    body["webhooks"] = [{**body["webhooks"][0], "new_nested": True}]
    batch = _batch(body)
    assert batch.webhooks is not None
    assert batch.webhooks[0].delivered is True
    line = json.loads(RESULT_LINES[0])
    line["data"]["extra"] = "x"
    assert result_decoder.decode(json.dumps(line).encode()).data is not None


def test_unknown_status_is_kept_and_not_terminal() -> None:
    """A status value from a newer API is kept as it came and never counts as terminal."""
    batch = _batch({**STATUS_BODIES["processing"], "status": "paused"})
    assert batch.status == "paused"
    assert not batch.is_terminal
    assert not batch.succeeded
    item = result_decoder.decode(b'{"task_id":"t","custom_id":null,"status":"retrying"}')
    assert item.status == "retrying"


@pytest.mark.parametrize(
    "stamp", ["2026-07-20T10:00:00", "2026-07-20 10:00:00", "yesterday", "1784541600"]
)
def test_naive_or_bad_timestamp_is_a_decode_error(stamp: str) -> None:
    """A timestamp without an offset (or no timestamp at all) breaks the schema."""
    with pytest.raises(msgspec.DecodeError):
        _batch({**STATUS_BODIES["pending"], "created_at": stamp})


def test_offset_timestamps_keep_their_instant() -> None:
    """An offset other than Z decodes to the same instant, timezone-aware."""
    batch = _batch({**STATUS_BODIES["pending"], "created_at": "2026-07-20T12:00:00.123456+02:00"})
    assert batch.created_at.tzinfo is not None
    assert batch.created_at == datetime(2026, 7, 20, 10, 0, 0, 123456, tzinfo=UTC)


def test_missing_required_field_is_a_decode_error() -> None:
    """A status body without batch_id breaks the schema."""
    body = dict(STATUS_BODIES["pending"])
    del body["batch_id"]
    with pytest.raises(msgspec.ValidationError, match="batch_id"):
        _batch(body)


def test_finished_items_and_fraction_done() -> None:
    """finished_items counts ready+failed+canceled; fraction_done is that over total."""
    canceling = _batch(STATUS_BODIES["canceling"])
    assert canceling.finished_items == 3
    assert canceling.fraction_done == pytest.approx(0.75)
    pending = _batch(STATUS_BODIES["pending"])
    assert (pending.finished_items, pending.fraction_done) == (0, 0.0)


def test_fraction_done_stays_in_range() -> None:
    """Counters over total are clamped to 1.0; an empty batch is done only when terminal."""
    over = _batch({**STATUS_BODIES["completed"], "ready_items": 9})
    assert over.fraction_done == 1.0
    empty = {**STATUS_BODIES["pending"], "total_items": 0, "queued_items": 0}
    assert _batch(empty).fraction_done == 0.0
    assert _batch({**empty, "status": "completed"}).fraction_done == 1.0


def test_succeeded_needs_completed_and_every_item_ready() -> None:
    """completed with a failed item is not success; completed with all ready is."""
    completed = _batch(STATUS_BODIES["completed"])
    assert completed.is_terminal
    assert not completed.succeeded
    all_ready = _batch({**STATUS_BODIES["completed"], "ready_items": 4, "failed_items": 0})
    assert all_ready.succeeded
    canceled_all_ready = _batch({**STATUS_BODIES["canceled"], "ready_items": 4})
    assert not canceled_all_ready.succeeded


def test_structs_are_frozen() -> None:
    """Snapshots cannot be changed after decoding."""
    batch = _batch(STATUS_BODIES["pending"])
    with pytest.raises(AttributeError):
        batch.status = "completed"  # type: ignore[misc]
    item: ResultItem = result_decoder.decode(RESULT_LINES[3])
    with pytest.raises(AttributeError):
        item.status = "ready"  # type: ignore[misc]
