"""Text and JSON renderings of batches, events and results, shared by every command.

JSON follows the API's own shapes: a batch is the object the API sends
(`msgspec.to_builtins` of the struct, datetimes as RFC 3339 text), and a watch
event is ``{"kind", "batch_id", "batch", "error"}`` with ``batch`` such an
object or null and ``error`` the error's text or null.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from .._events import Event
from .._models import Batch, ResultItem

_encoder = msgspec.json.Encoder()

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: every control character escaped as ``\\xNN`` / ``\\uNNNN``.

    Servers choose statuses, messages and error bodies; an ESC in one would let
    them move the cursor, retitle the window or hide lines. JSON output needs
    none of this: its encoder escapes control characters already.
    """
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def batch_json(batch: Batch) -> dict[str, Any]:
    """The batch as the API's JSON object."""
    return struct_json(batch)


def error_text(error: BaseException | None) -> str | None:
    """``Type: message`` for an error, or None; asyncbatch errors never hold the API key."""
    if error is None:
        return None
    return f"{type(error).__name__}: {error}"


NO_SUCH_BATCH = "no such batch: wrong ID, deleted, or past its 30 days (404)"
"""The one wording of a 404, in every command."""

# Each API failure's one wording, most specific type first; {said} is what the server said.
_WORDINGS: tuple[tuple[type[Exception], str], ...] = (
    (NotFoundError, NO_SUCH_BATCH),
    (AuthenticationError, "the API key was refused (401): check --api-key or $TWELVELABS_API_KEY"),
    (PermissionDeniedError, "the API key may not do this (403): {said}"),
    (BadRequestError, "the API rejected the request (400): {said}"),
    (ConflictError, "conflict (409): {said}"),
    (RateLimitError, "rate limited (429): {said}"),
    (ServerError, "the API failed ({status}): {said}"),
    (APITimeoutError, "the API did not answer in time: {text}"),
    (APIConnectionError, "cannot reach the API: {text}"),
)


def failure_text(error: BaseException) -> str:
    """How every command words ``error``: the same failure reads the same everywhere."""
    for kind, template in _WORDINGS:
        if isinstance(error, kind):
            status = error.status if isinstance(error, APIStatusError) else None
            said = server_said(error) if isinstance(error, APIStatusError) else str(error)
            return template.format(text=error, said=said, status=status)
    return f"{type(error).__name__}: {error}"


def server_said(error: APIStatusError) -> str:
    """What the server said, without the URL: its message, else its code, else the status line."""
    if error.message:
        return error.message + (f" [{error.code}]" if error.code else "")
    return error.code or str(error)


def event_json(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict with the `Event`'s field names."""
    return {
        "kind": str(event.kind),
        "batch_id": event.batch_id,
        "batch": None if event.batch is None else batch_json(event.batch),
        "error": error_text(event.error),
    }


def json_text(value: object) -> str:
    """One compact JSON document, without a newline."""
    return _encoder.encode(value).decode()


def json_line(value: object) -> str:
    """One compact JSON document and a newline."""
    return json_text(value) + "\n"


def struct_json(value: msgspec.Struct) -> dict[str, Any]:
    """A response struct as the API's JSON object: datetimes as RFC 3339 text, and
    optional fields the API did not send (None here) left out, as the API leaves them."""
    builtins = _without_none(msgspec.to_builtins(value))
    assert isinstance(builtins, dict)  # noqa: S101 - a Struct always becomes a dict
    return builtins


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):  # msgspec keeps tuple fields (webhooks[]) as tuples
        return [_without_none(v) for v in value]
    return value


def result_line(item: ResultItem) -> str:
    """A results item as one JSON line, without the optional fields it does not have;
    ``custom_id`` stays even when null, as the API always sends it."""
    value = struct_json(item)
    return json_line(
        {"task_id": value.pop("task_id"), "custom_id": value.pop("custom_id", None)} | value
    )


def counts_text(batch: Batch) -> str:
    """``12/30 done (ready 10, failed 2, canceled 0)``."""
    return (
        f"{batch.finished_items}/{batch.total_items} done "
        f"(ready {batch.ready_items}, failed {batch.failed_items}, "
        f"canceled {batch.canceled_items})"
    )


def batch_line(batch: Batch) -> str:
    """One human line for a batch: ID, status, counters, mode, creation time."""
    created = batch.created_at.strftime("%Y-%m-%d %H:%M:%SZ")
    return terminal_text(
        f"{batch.batch_id}  {batch.status:<10}  {counts_text(batch)}  "
        f"{batch.analysis_mode}  created {created}"
    )


def outcome_text(batch: Batch) -> str:
    """What a terminal batch's end means for the caller, in a few words."""
    if batch.succeeded:
        return "succeeded"
    if batch.status == "completed":
        return f"completed with {batch.failed_items} failed item(s)"
    return str(batch.status)


def duration_text(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h04m``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def rate_text(items_per_second: float | None) -> str:
    """``2.5/s`` or ``30/min``: whichever reads better; ``-`` when unknown."""
    if items_per_second is None or items_per_second <= 0:
        return "-"
    if items_per_second >= 1:
        return f"{items_per_second:.1f}/s"
    return f"{items_per_second * 60:.1f}/min"


def text_bar(batch: Batch, width: int = 24) -> str:
    """A progress bar in plain characters: ``#`` ready, ``x`` failed, ``-`` canceled, ``.`` left."""
    cells = segment_cells(batch, width)
    return "[" + "#" * cells[0] + "x" * cells[1] + "-" * cells[2] + "." * cells[3] + "]"


def segment_cells(batch: Batch, width: int) -> tuple[int, int, int, int]:
    """How many of ``width`` cells go to ready, failed, canceled and unfinished items.

    Any finished segment gets at least one cell, so a single failure shows.
    """
    total = max(batch.total_items, 1)
    parts = [batch.ready_items, batch.failed_items, batch.canceled_items]
    cells = [0 if n <= 0 else max(1, math.floor(n * width / total)) for n in parts]
    while sum(cells) > width:  # the minimum of one cell may overflow a narrow bar
        cells[cells.index(max(cells))] -= 1
    if batch.finished_items >= batch.total_items and sum(cells) < width:
        cells[cells.index(max(cells))] += width - sum(cells)  # rounding: a full batch fills the bar
    return cells[0], cells[1], cells[2], width - sum(cells)
