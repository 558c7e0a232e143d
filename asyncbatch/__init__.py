"""asyncbatch: an asyncio client and watcher for the TwelveLabs batch-analysis API.

A map of the package, lower layers first (a module imports only from its own layer or lower
ones, and never in a circle; `tests/test_layers.py` checks both):

    _errors _models _retry _budget _redact   leaves: the error tree, the API's structs and the ID
                                             check, RetryPolicy / PollPolicy and the failure
                                             classes, the token bucket, secret redaction
    _telemetry _telemetry_*                  telemetry hooks and their logging, Prometheus and
                                             OpenTelemetry integrations (imported lazily)
    _transport _results                      HTTP: auth, timeouts, retries (aiohttp only here),
                                             and the streamed results
    _events _tracker                         the watcher's pure rules: which events a snapshot
                                             makes, what to poll when, what a failure means
    _coordination _stores/                   what watchers share: the request gate and leases,
                                             the state stores (memory, SQLite)
    _watcher _wait                           the IO driver (reads through the BatchSource
                                             protocol) and wait()
    _jobs/                                   jobs: many requests through the account's slots,
                                             a durable ledger, retries, exactly one outcome each
    _client                                  Client and its batches resource (watch, wait), jobs
    _webhooks/ webhooks redis testing        optional parts: webhook deliveries, the Redis store
                                             and gate, the simulator (and _stores/url, which
                                             opens any store from a --state URL)
    airflow                                  Apache Airflow: trigger, operators, sensor
    _cli/                                    the `asyncbatch` command, one module per family
"""

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
from ._jobs import Attempt, Job, JobOptions, JobOutcome, Jobs, JobStatistics, OutcomeStatus
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
from ._retry import PollPolicy, RetryPolicy
from ._stores.memory import MemoryStore, StateStore, StoredBatch
from ._stores.sqlite import SQLiteStore
from ._telemetry import JobProgress, TelemetryHooks, set_telemetry_hooks, telemetry_hooks
from ._telemetry_logging import LoggingHooks
from ._telemetry_otel import OTelMetricsHooks, url_template_trace_config
from ._telemetry_prometheus import PrometheusHooks
from ._tracker import Strategy
from ._version import __version__
from ._watcher import BatchReader, BatchSource, Watcher, WatcherStatistics, WatchOptions

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBatchError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchDefaults",
    "BatchItemRequest",
    "BatchPage",
    "BatchReader",
    "BatchSource",
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
    "Job",
    "JobOptions",
    "JobOutcome",
    "JobProgress",
    "JobStatistics",
    "Jobs",
    "Leases",
    "LocalGate",
    "LoggingHooks",
    "MediaSource",
    "MemoryStore",
    "NotFoundError",
    "OTelMetricsHooks",
    "OutcomeStatus",
    "PageInfo",
    "PermissionDeniedError",
    "PollPolicy",
    "PrometheusHooks",
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
    "TelemetryHooks",
    "TimeRange",
    "Usage",
    "VideoSource",
    "WaitTimeoutError",
    "WatchOptions",
    "Watcher",
    "WatcherStatistics",
    "WebhookDelivery",
    "WebhookVerificationError",
    "__version__",
    "set_telemetry_hooks",
    "telemetry_hooks",
    "url_template_trace_config",
]

# Public classes report the package as their home, as in tracebacks and reprs.
# msgspec structs keep theirs: msgspec resolves their annotations in it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and not issubclass(_obj, msgspec.Struct):
        _obj.__module__ = __name__
del _name, _obj
