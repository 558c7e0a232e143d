"""The webhook envelope TwelveLabs POSTs, and which batches a delivery concerns.

Every delivery is ``{"id", "created_at", "type", "data"}`` (reference §3).
The documented types are ``index.task.ready|failed`` and
``analyze.task.ready|failed``; a newer spec also names ``analyze.task.canceled``.

The batch completion notification exists (a batch's ``webhooks[]`` records its
delivery) but its ``type`` and ``data`` are undocumented. **Our assumption:**
its type starts with ``analyze.batch.`` (we expect ``analyze.batch.completed``
and the like) and its ``data`` is the batch status object, so the batch ID is
``data.batch_id`` (or ``data.id``). Nothing here depends on that guess being
exact: unknown types decode, and any event whose ``data`` names a 24-hex
``batch_id`` or ``id`` refreshes that batch (see `refresh_targets`).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

from .._errors import DecodeError, WebhookVerificationError
from .._models import BATCH_ID_PATTERN, AwareDatetime

TASK_EVENT_PREFIX: Final = "analyze.task."
"""Events about one analysis task; each batch item is one such task."""
BATCH_EVENT_PREFIX: Final = "analyze.batch."
"""Our assumption for the undocumented batch completion notification."""
INDEX_EVENT_PREFIX: Final = "index."
"""Events of the indexing API, which never concern a batch."""


class WebhookPayloadError(WebhookVerificationError, DecodeError):
    """The signature held, but the body is not a webhook event (not JSON, or no ``id``/``type``).

    Also a `DecodeError`, like every body that breaks its schema; ``snippet``
    is empty, since a delivery's body is the sender's data, not ours to log.
    """

    def __init__(self, message: str) -> None:
        self.snippet = b""
        self.line_number = None
        Exception.__init__(self, message)


class WebhookEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One verified webhook delivery.

    ``id`` identifies the delivery (``whe_...``; retries of one delivery share
    it), ``created_at`` is when it was sent (timezone-aware), ``type`` the
    event type as sent (any string; see `WebhookEventType` for the known
    ones), and ``data`` the event's payload as plain JSON values. Unknown
    fields are ignored.
    """

    id: str
    created_at: AwareDatetime
    type: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def is_task_event(self) -> bool:
        """True for ``analyze.task.*``: an analysis task (a batch item, maybe) finished."""
        return self.type.startswith(TASK_EVENT_PREFIX)

    @property
    def batch_id(self) -> str | None:
        """The batch this event names, if it names one.

        ``data.batch_id`` when it is 24 hex digits; else, outside task and index
        events (whose ``data.id`` is a task ID), ``data.id`` when it is 24 hex
        digits.
        """
        candidates = [self.data.get("batch_id")]
        if not self.is_task_event and not self.type.startswith(INDEX_EVENT_PREFIX):
            candidates.append(self.data.get("id"))
        for candidate in candidates:
            if isinstance(candidate, str) and BATCH_ID_PATTERN.fullmatch(candidate):
                return candidate
        return None


class WebhookEventType(enum.StrEnum):
    """Event types the API documents, plus our assumed batch completion type.

    `WebhookEvent.type` may hold any other string; compare it with these.
    """

    ANALYZE_TASK_READY = "analyze.task.ready"
    ANALYZE_TASK_FAILED = "analyze.task.failed"
    ANALYZE_TASK_CANCELED = "analyze.task.canceled"
    """Named by a newer spec only; unverified."""
    INDEX_TASK_READY = "index.task.ready"
    INDEX_TASK_FAILED = "index.task.failed"
    ANALYZE_BATCH_COMPLETED = "analyze.batch.completed"
    """Our assumption; the real type of the batch completion notification is undocumented."""


class RefreshAll(enum.Enum):
    """Marker: refresh every open batch (one list sweep in sweep mode)."""

    ALL = "all"


REFRESH_ALL: Final = RefreshAll.ALL


def refresh_targets(event: WebhookEvent) -> RefreshAll | tuple[str, ...]:
    """What a watcher should refresh for this event.

    * ``analyze.task.*``: everything (`REFRESH_ALL`); a task event does not say
      which batch it belongs to, and one list sweep refreshes every active batch.
    * an event naming a batch (`WebhookEvent.batch_id`): that batch.
    * another ``analyze.batch.*`` event: everything, since its shape is our guess.
    * anything else (``index.*``, unknown types): nothing.
    """
    if event.is_task_event:
        return REFRESH_ALL
    if (batch_id := event.batch_id) is not None:
        return (batch_id,)
    if event.type.startswith(BATCH_EVENT_PREFIX):
        return REFRESH_ALL
    return ()


_decoder: Final = msgspec.json.Decoder(WebhookEvent)


def decode_event(body: bytes) -> WebhookEvent:
    """Decode a verified body; `WebhookPayloadError` when it is not a webhook event."""
    try:
        return _decoder.decode(body)
    except Exception as exc:  # any decoder failure (RecursionError too) is a bad body
        # msgspec's message names the field and the problem, never the body.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise WebhookPayloadError(f"the webhook body is not a webhook event: {reason}") from None
