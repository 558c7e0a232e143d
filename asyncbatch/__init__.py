"""asyncbatch: an asyncio client and watcher for the TwelveLabs batch-analysis API."""

import msgspec

from ._client import Batches, Client
from ._coordination import Leases, LocalGate, RequestGate
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncBatchError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DecodeError,
    EndpointNotFoundError,
    InvalidBatchIdError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StateStoreError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from ._events import Event, EventKind
from ._models import (
    Batch,
    BatchDefaults,
    BatchItemRequest,
    BatchPage,
    BatchStatus,
    CreateBatchRequest,
    CreatedBatch,
    CreatedItem,
    ItemError,
    ItemStatus,
    MediaSource,
    PageInfo,
    Prompt,
    ResponseFormat,
    ResultItem,
    SegmentDefinition,
    SegmentField,
    SegmentFieldItems,
    TaskResult,
    TimeRange,
    Usage,
    VideoSource,
    WebhookDelivery,
)
from ._results import ResultStream
from ._retry import RetryPolicy
from ._stores.memory import MemoryStore, StateStore, StoredBatch
from ._stores.sqlite import SQLiteStore
from ._tracker import Strategy
from ._version import __version__
from ._watcher import Watcher, WatcherStatistics

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBatchError",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchDefaults",
    "BatchItemRequest",
    "BatchPage",
    "BatchStatus",
    "Batches",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "CreateBatchRequest",
    "CreatedBatch",
    "CreatedItem",
    "DecodeError",
    "EndpointNotFoundError",
    "Event",
    "EventKind",
    "InvalidBatchIdError",
    "InvalidRequestError",
    "ItemError",
    "ItemStatus",
    "Leases",
    "LocalGate",
    "MediaSource",
    "MemoryStore",
    "NotFoundError",
    "PageInfo",
    "PermissionDeniedError",
    "Prompt",
    "RateLimitError",
    "RequestGate",
    "ResponseFormat",
    "ResultItem",
    "ResultStream",
    "RetryPolicy",
    "SQLiteStore",
    "SegmentDefinition",
    "SegmentField",
    "SegmentFieldItems",
    "ServerError",
    "StateStore",
    "StateStoreError",
    "StoredBatch",
    "Strategy",
    "TaskResult",
    "TimeRange",
    "Usage",
    "VideoSource",
    "WaitTimeoutError",
    "Watcher",
    "WatcherStatistics",
    "WebhookDelivery",
    "WebhookVerificationError",
    "__version__",
]

# Public classes report the package as their home, as in tracebacks and reprs.
# msgspec structs keep theirs: msgspec resolves their annotations in it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and not issubclass(_obj, msgspec.Struct):
        _obj.__module__ = __name__
del _name, _obj
