"""Builders of `Batch` snapshots for tests of the tracker and the watcher."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from asyncbatch import Batch

CREATED = datetime(2026, 7, 20, 10, 0, tzinfo=UTC)


def snapshot(
    status: str,
    *,
    batch_id: str = "68f4ddaf8aaa60d33df0e800",
    queued: int = 0,
    processing: int = 0,
    ready: int = 0,
    failed: int = 0,
    canceled: int = 0,
) -> Batch:
    """A batch snapshot whose total is the sum of its counters."""
    return Batch(
        batch_id=batch_id,
        status=status,
        analysis_mode="general",
        model_name="pegasus1.5",
        total_items=queued + processing + ready + failed + canceled,
        created_at=CREATED,
        expires_at=CREATED + timedelta(hours=24),
        queued_items=queued,
        processing_items=processing,
        ready_items=ready,
        failed_items=failed,
        canceled_items=canceled,
    )
