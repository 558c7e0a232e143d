"""msgspec structs for everything the batch endpoints send and take.

Decoding rules, for every struct here:

* unknown fields are ignored, so a newer API that adds fields never breaks us;
* every optional field has a default;
* ``status`` fields are plain strings: a known value compares equal to its
  `BatchStatus` / `ItemStatus` member, and an unknown value from a newer API is
  kept as it came and counts as not terminal;
* timestamps must carry an offset and decode to timezone-aware `datetime`.

Request structs (`BatchItemRequest`, `BatchDefaults`, ...) forbid unknown fields
instead: a misspelt key in a request is a mistake we can report before sending.
"""

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ._errors import DecodeError, InvalidBatchIdError

_T = TypeVar("_T")

SNIPPET_BYTES = 200
"""How much of an offending body or line a `DecodeError` keeps."""

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

# Item counters are plain integers, as the spec types them: an odd value (negative,
# above the total) still decodes, and the watcher's rules judge it (`_events`).
Count = int

BATCH_ID_PATTERN = re.compile(r"[0-9a-fA-F]{24}")


def check_batch_id(batch_id: object) -> str:
    """Return ``batch_id`` if it is 24 hex digits, else raise `InvalidBatchIdError`."""
    if isinstance(batch_id, str) and BATCH_ID_PATTERN.fullmatch(batch_id):
        return batch_id
    shown = repr(batch_id)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise InvalidBatchIdError(f"a batch ID is 24 hexadecimal digits, got {shown}")


def check_not_a_string(value: object, name: str) -> None:
    """Raise `TypeError` when a lone ``str`` (or bytes) is given where a sequence belongs.

    Iterating a string yields its characters: ``watch("68f4...")`` would watch
    "6", "8", ..., and ``list(status="completed")`` would send nine one-letter
    filters.
    """
    if isinstance(value, str | bytes):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise TypeError(
            f"{name} takes a list of values, not a single string: pass [{shown}] instead"
        )


class BatchStatus(enum.StrEnum):
    """Every batch status the API documents. ``Batch.status`` may hold others."""

    PENDING = "pending"
    PROCESSING = "processing"
    CANCELING = "canceling"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"


class ItemStatus(enum.StrEnum):
    """Every batch item status the API documents."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL_STATUSES: frozenset[str] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.CANCELED, BatchStatus.EXPIRED}
)
ACTIVE_STATUSES: tuple[BatchStatus, ...] = (
    BatchStatus.PENDING,
    BatchStatus.PROCESSING,
    BatchStatus.CANCELING,
)


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """Delivery record of the batch completion notification to one endpoint."""

    url: str
    delivered: bool
    attempts: int = 0
    last_error: str | None = None


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """A batch status snapshot (`GET /analyze/batches/{id}`, list items, cancel)."""

    batch_id: str
    status: str
    analysis_mode: str
    model_name: Literal["pegasus1.5"]
    total_items: Count
    created_at: AwareDatetime
    expires_at: AwareDatetime
    queued_items: Count = 0
    processing_items: Count = 0
    ready_items: Count = 0
    failed_items: Count = 0
    canceled_items: Count = 0
    completed_at: AwareDatetime | None = None
    canceled_at: AwareDatetime | None = None
    expired_at: AwareDatetime | None = None
    webhooks: tuple[WebhookDelivery, ...] | None = None

    @property
    def is_terminal(self) -> bool:
        """True for ``completed``, ``canceled`` and ``expired``; false for unknown statuses."""
        return self.status in TERMINAL_STATUSES

    @property
    def finished_items(self) -> int:
        """Items that will not change any more: ready, failed or canceled."""
        return self.ready_items + self.failed_items + self.canceled_items

    @property
    def fraction_done(self) -> float:
        """Finished items over total items, between 0.0 and 1.0."""
        if self.total_items <= 0:
            return 1.0 if self.is_terminal else 0.0
        return min(1.0, max(0.0, self.finished_items / self.total_items))

    @property
    def succeeded(self) -> bool:
        """True only for a ``completed`` batch in which every item is ready.

        ``completed`` alone is not success: the API finishes a batch whose items
        all failed with ``completed`` too.
        """
        return self.status == BatchStatus.COMPLETED and self.ready_items == self.total_items


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token usage of one analysis."""

    output_tokens: int = 0
    input_tokens: int | None = None


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """The output of a ready item. In ``time_based_metadata`` mode ``data`` is JSON text."""

    data: str
    generation_id: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


class ItemError(msgspec.Struct, frozen=True, kw_only=True):
    """Why an item failed. ``code`` is not always sent."""

    message: str
    code: str | None = None


class ResultItem(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a batch's results: ``data`` only when ready, ``error`` when failed."""

    task_id: str
    status: str
    custom_id: str | None = None
    data: TaskResult | None = None
    error: ItemError | None = None


class CreatedItem(msgspec.Struct, frozen=True, kw_only=True):
    """The task made for one submitted request."""

    task_id: str
    custom_id: str | None = None


class CreatedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The 201 answer to `POST /analyze/batches`."""

    batch_id: str
    status: str
    total_items: int
    created_at: AwareDatetime
    expires_at: AwareDatetime
    items: tuple[CreatedItem, ...] = ()


class PageInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Pagination facts of a list page; the API marks none of them required."""

    page: int | None = None
    limit_per_page: int | None = None
    total_page: int | None = None
    total_results: int | None = None


class BatchPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of `GET /analyze/batches`."""

    data: tuple[Batch, ...]
    page_info: PageInfo = PageInfo()


class _ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str | None = None
    message: str | None = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """An error body, nested (``{"error": {...}}``) or flat (``{"code", "message"}``)."""

    error: _ErrorDetail | None = None
    code: str | None = None
    message: str | None = None

    def parts(self) -> tuple[str | None, str | None]:
        """The ``(code, message)`` pair, whichever shape the body had."""
        if self.error is not None:
            return self.error.code, self.error.message
        return self.code, self.message


# Request structs, as the spec's schemas define them (tests/test_request_models.py
# compares them). ``omit_defaults`` keeps unset options off the wire, so the
# server applies its own defaults and never sees a ``null`` the schemas refuse.

CustomId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
# The largest double: a bound that refuses infinity, which would go out as null.
_MAX_DOUBLE = 1.7976931348623157e308
# Documented bounds. They also refuse NaN, which would otherwise go out as null.
Temperature = Annotated[float, msgspec.Meta(ge=0, le=1)]
# An integer written without a fraction: 4096.0 is refused. The per-mode
# ranges (512 or 2,048 to 98,304) are the server's to check.
MaxTokens = Annotated[int, msgspec.Meta(ge=1)]
SegmentDuration = Annotated[float, msgspec.Meta(ge=2, le=_MAX_DOUBLE)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=_MAX_DOUBLE)]
Timestamp = Annotated[float, msgspec.Meta(ge=-_MAX_DOUBLE, le=_MAX_DOUBLE)]
TimeFormat = Literal["seconds", "hh:mm:ss", "hh:mm:ss.fff"]
MAX_MEDIA_SOURCES = 4


class VideoSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The video to analyse; the API accepts only uploaded assets."""

    asset_id: str
    type: Literal["asset_id"] = "asset_id"


class MediaSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A reference image for the ``<@name>`` placeholders of a prompt or segment definition.

    Give exactly one of ``url`` (a public HTTPS URL), ``asset_id`` or
    ``base64_string`` (at most 30 MB); the others stay unset and are not sent.
    """

    name: str
    media_type: Literal["image"] = "image"
    url: str | msgspec.UnsetType = msgspec.UNSET
    asset_id: str | msgspec.UnsetType = msgspec.UNSET
    base64_string: str | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        refs = (self.url, self.asset_id, self.base64_string)
        given = [ref for ref in refs if ref is not msgspec.UNSET]
        if len(given) != 1:
            count = len(given)
            raise ValueError(
                f"a media source needs exactly one of url, asset_id, base64_string, not {count}"
            )


MediaSources = Annotated[tuple[MediaSource, ...], msgspec.Meta(max_length=MAX_MEDIA_SOURCES)]


class Prompt(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """The prompt of a ``general`` analysis; ``<@name>`` in the text refers to a media source."""

    input_text: str
    media_sources: MediaSources | None = None


class SegmentFieldItems(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The element type of an ``array`` segment field."""

    type: Literal["string", "number", "boolean", "integer"]


class SegmentField(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A custom field extracted for each segment.

    ``format`` is for (and required by) ``timestamp`` fields, ``items`` for
    (and required by) ``array`` fields; ``enum`` holds at most 100 values.
    """

    name: str
    type: Literal["string", "boolean", "number", "integer", "array", "timestamp"]
    description: str
    format: TimeFormat | None = None
    enum: Annotated[tuple[str, ...], msgspec.Meta(max_length=100)] | None = None
    items: SegmentFieldItems | None = None


class TimeRange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A window of the video, in seconds of its own timeline, at least 2 s long."""

    start_time: Timestamp
    end_time: Timestamp


class SegmentDefinition(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A type of segment to extract in ``time_based_metadata`` mode."""

    id: str
    description: str
    fields: tuple[SegmentField, ...] | None = None
    media_sources: MediaSources | None = None
    time_ranges: tuple[TimeRange, ...] | None = None


class ResponseFormat(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Structured output: a JSON schema, or segment definitions for ``time_based_metadata``."""

    type: Literal["json_schema", "segment_definitions"]
    json_schema: dict[str, Any] | None = None
    segment_definitions: (
        Annotated[tuple[SegmentDefinition, ...], msgspec.Meta(min_length=1, max_length=20)] | None
    ) = None
    segment_time_format: TimeFormat | None = None


class _AnalysisOptions(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """The options a batch sets as defaults and each item may override (whole objects)."""

    prompt: Prompt | None = None
    response_format: ResponseFormat | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    min_segment_duration: SegmentDuration | None = None
    max_segment_duration: SegmentDuration | None = None
    start_time: Seconds | None = None
    end_time: Seconds | None = None


class BatchDefaults(_AnalysisOptions, frozen=True, kw_only=True):
    """Options applied to every item unless the item sets its own (whole objects, not merged)."""


class BatchItemRequest(_AnalysisOptions, frozen=True, kw_only=True):
    """One request of a batch: a video plus optional per-item overrides."""

    video: VideoSource
    custom_id: CustomId | None = None


MAX_REQUESTS_PER_BATCH = 1000


class CreateBatchRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """The body of `POST /analyze/batches`."""

    model_name: Literal["pegasus1.5"]
    analysis_mode: Literal["general", "time_based_metadata"]
    requests: Annotated[
        tuple[BatchItemRequest, ...], msgspec.Meta(min_length=1, max_length=MAX_REQUESTS_PER_BATCH)
    ]
    defaults: BatchDefaults | None = None


# Decoders are built once: building one compiles the schema.
batch_decoder = msgspec.json.Decoder(Batch)
page_decoder = msgspec.json.Decoder(BatchPage)
created_decoder = msgspec.json.Decoder(CreatedBatch)
result_decoder = msgspec.json.Decoder(ResultItem)
error_decoder = msgspec.json.Decoder(ErrorBody)
encoder = msgspec.json.Encoder()


def decode_body(
    decoder: msgspec.json.Decoder[_T], body: bytes, what: str, *, line_number: int | None = None
) -> _T:
    """Decode ``body``; anything the decoder raises becomes `DecodeError` with a snippet.

    Not only schema errors: invalid UTF-8 inside a string raises the codec's
    error, and JSON nested too deeply (``[[[[...``, even under an ignored
    field) raises `RecursionError`. A decoder has no other way to fail, so
    every exception it raises means a bad body, and none may escape raw.
    """
    try:
        return decoder.decode(body)
    except Exception as exc:  # see above: any decoder failure is a bad body
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DecodeError(
            f"{what}: {reason}", snippet=body[:SNIPPET_BYTES], line_number=line_number
        ) from None
