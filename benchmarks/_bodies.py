"""Canned API bodies the benchmarks serve and decode (reference §8.2, written out in full)."""

from __future__ import annotations

BATCH_ID = "68f4ddaf8aaa60d33df0e800"

# The `processing` example of §8.2 with its common fields spelt out: what a poll
# of a running batch answers, so the body every poll benchmark serves.
PROCESSING_BODY = (
    b'{"batch_id":"68f4ddaf8aaa60d33df0e800","analysis_mode":"general",'
    b'"model_name":"pegasus1.5","status":"processing","total_items":4,'
    b'"created_at":"2026-07-20T10:00:00Z","expires_at":"2026-07-21T10:00:00Z",'
    b'"queued_items":1,"processing_items":1,"ready_items":1,"failed_items":1,'
    b'"canceled_items":0}'
)

# The `completed` example of §8.2, with a webhook record: the largest status body.
COMPLETED_BODY = (
    b'{"batch_id":"68f4ddaf8aaa60d33df0e800","analysis_mode":"general",'
    b'"model_name":"pegasus1.5","status":"completed","total_items":4,'
    b'"created_at":"2026-07-20T10:00:00Z","expires_at":"2026-07-21T10:00:00Z",'
    b'"completed_at":"2026-07-20T11:00:00Z","queued_items":0,"processing_items":0,'
    b'"ready_items":3,"failed_items":1,"canceled_items":0,'
    b'"webhooks":[{"url":"https://example.com/tl-hook","delivered":true,"attempts":1}]}'
)

NOT_FOUND_BODY = b'{"error":{"code":"not_found","message":"No such path."}}'
