"""OpenTelemetry: HTTP span details for the official aiohttp instrumentation, and metrics.

The official ``opentelemetry-instrumentation-aiohttp-client`` makes one span
per HTTP attempt, named by the method alone (``GET``). `url_template_trace_config`
is an aiohttp trace config to put beside it: it renames each of those spans
``GET /analyze/batches/{batch_id}``, sets ``url.template``, and on a retry sets
``http.request.resend_count``. `Client(trace_configs=...)` adds it by itself.

`OTelMetricsHooks` records the domain signals (`TelemetryHooks`) as OpenTelemetry
instruments. ``opentelemetry-api`` is imported when one is made, not before:
install it with ``pip install 'asyncbatch[otel]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp

from ._telemetry import JobProgress, TelemetryHooks, endpoint_of

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

_INSTRUMENTATION_SCOPE = "opentelemetry.instrumentation.aiohttp_client"
_METER_NAME = "asyncbatch"


def url_template_trace_config() -> aiohttp.TraceConfig:
    """An aiohttp trace config that names the official instrumentation's spans by URL template.

    Give it to your own session beside the instrumentation's
    (``ClientSession(trace_configs=[create_trace_config(), url_template_trace_config()])``) or to
    ``AioHttpClientInstrumentor().instrument(trace_configs=[...])``; `Client` adds it
    itself to the session it makes when given ``trace_configs``. It touches only spans
    that instrumentation made, for paths under ``/analyze/batches``, and does nothing
    when OpenTelemetry is not installed.
    """
    config = aiohttp.TraceConfig()
    # Both: with the instrumentation's config first, its span exists at our request
    # start; with it last (the global instrumentor appends it), only once headers go.
    config.on_request_start.append(_name_span)
    config.on_request_headers_sent.append(_name_span)
    return config


async def _name_span(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestStartParams | aiohttp.TraceRequestHeadersSentParams,
) -> None:
    span = _instrumentation_span()
    if span is None:
        return
    template = endpoint_of(params.url.path)
    if not template.startswith("/analyze/batches"):
        return
    span.update_name(f"{params.method} {template}")
    span.set_attribute("url.template", template)
    extra = context.trace_request_ctx
    if isinstance(extra, Mapping) and "http.request.resend_count" in extra:
        span.set_attribute("http.request.resend_count", extra["http.request.resend_count"])


def _instrumentation_span() -> Any:
    """The current span if the aiohttp instrumentation made it and records; else None."""
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional, and only when traced
    except ImportError:  # pragma: no cover - the extra is installed in the tests
        return None
    span = trace.get_current_span()
    scope = getattr(span, "instrumentation_scope", None)
    if not span.is_recording() or getattr(scope, "name", None) != _INSTRUMENTATION_SCOPE:
        return None  # a caller's own span, or nothing: leave it alone
    return span


class OTelMetricsHooks(TelemetryHooks):
    """Records asyncbatch's signals as OpenTelemetry metrics (meter ``asyncbatch``).

    ``meter_provider`` defaults to the global one. The instruments, their units and
    attributes are listed in ``docs/telemetry.md``; no attribute ever holds a batch ID.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics  # noqa: PLC0415 - the optional extra

        from ._version import __version__  # noqa: PLC0415

        meter = metrics.get_meter(_METER_NAME, __version__, meter_provider)
        self._requests = meter.create_counter(
            "asyncbatch.client.requests", "{request}", "HTTP attempts by endpoint and outcome"
        )
        self._duration = meter.create_histogram(
            "asyncbatch.client.request.duration", "s", "Duration of HTTP attempts"
        )
        self._retries = meter.create_counter(
            "asyncbatch.client.retries", "{retry}", "Failed requests that will be tried again"
        )
        self._pauses = meter.create_counter(
            "asyncbatch.watcher.pauses", "{pause}", "429 answers that paused a watcher"
        )
        self._paused = meter.create_counter(
            "asyncbatch.watcher.pause.duration", "s", "Time watchers were paused by 429s"
        )
        self._events = meter.create_counter(
            "asyncbatch.watcher.events", "{event}", "Events handed to consumers, by kind"
        )
        self._tracked = meter.create_up_down_counter(
            "asyncbatch.watcher.batches.tracked", "{batch}", "Batches being watched"
        )
        self._open = meter.create_up_down_counter(
            "asyncbatch.watcher.batches.open", "{batch}", "Watched batches without a final event"
        )
        self._active = meter.create_up_down_counter(
            "asyncbatch.watcher.batches.active",
            "{batch}",
            "Watched batches pending, processing or canceling",
        )
        self._items = meter.create_up_down_counter(
            "asyncbatch.watcher.items", "{item}", "Items of open watched batches, by status"
        )
        self._job_items = meter.create_gauge(
            "asyncbatch.job.items", "{item}", "A job's requests by status"
        )
        self._job_batches = meter.create_gauge(
            "asyncbatch.job.batches", "{batch}", "A job's batches, active or done"
        )
        self._job_attempts = meter.create_gauge(
            "asyncbatch.job.attempts", "{attempt}", "A job's item submissions so far"
        )

    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        attributes = {"http.request.method": method, "url.template": endpoint, "outcome": outcome}
        self._requests.add(1, attributes)
        self._duration.record(seconds, attributes)

    def retry(self, endpoint: str, reason: str, delay: float | None) -> None:
        self._retries.add(1, {"url.template": endpoint, "error.type": reason})

    def rate_limit_pause(self, seconds: float) -> None:
        self._pauses.add(1)
        self._paused.add(max(0.0, seconds))

    def event(self, kind: str) -> None:
        self._events.add(1, {"kind": str(kind)})

    def batches(self, *, tracked: int, open: int, active: int) -> None:
        if tracked:
            self._tracked.add(tracked)
        if open:
            self._open.add(open)
        if active:
            self._active.add(active)

    def items(self, changes: Mapping[str, int]) -> None:
        for status, change in changes.items():
            self._items.add(change, {"status": status})

    def job_progress(self, job: str, progress: JobProgress) -> None:
        for status, count in progress.items.items():
            self._job_items.set(count, {"status": status})
        self._job_batches.set(progress.batches_active, {"state": "active"})
        self._job_batches.set(progress.batches_done, {"state": "done"})
        self._job_attempts.set(progress.attempts)
