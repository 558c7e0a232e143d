"""Prometheus: asyncbatch's signals as ``prometheus_client`` metrics.

Every name starts with ``asyncbatch_`` and is what OpenTelemetry's Prometheus
exporter would make of the `OTelMetricsHooks` instrument of the same meaning
(dots to underscores, the unit as a suffix, ``_total`` on counters), so one
dashboard reads either. ``prometheus_client`` is imported when `PrometheusHooks`
is made: install it with ``pip install 'asyncbatch[prometheus]'``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._telemetry import JobProgress, TelemetryHooks

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class _Metrics:
    requests: Counter
    duration: Histogram
    retries: Counter
    pauses: Counter
    paused: Counter
    events: Counter
    tracked: Gauge
    open: Gauge
    active: Gauge
    items: Gauge
    job_items: Gauge
    job_batches: Gauge
    job_attempts: Gauge


# One set of metrics per registry: a registry refuses a second metric of the same name.
_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram  # noqa: PLC0415 - optional extra

    known = _REGISTERED.get(registry)
    if known is not None:
        return known
    made = _Metrics(
        requests=Counter(
            "asyncbatch_client_requests",
            "HTTP attempts by endpoint and outcome",
            ["http_request_method", "url_template", "outcome"],
            registry=registry,
        ),
        duration=Histogram(
            "asyncbatch_client_request_duration_seconds",
            "Duration of HTTP attempts",
            ["http_request_method", "url_template", "outcome"],
            registry=registry,
        ),
        retries=Counter(
            "asyncbatch_client_retries",
            "Failed requests that will be tried again",
            ["url_template", "error_type"],
            registry=registry,
        ),
        pauses=Counter(
            "asyncbatch_watcher_pauses", "429 answers that paused a watcher", registry=registry
        ),
        paused=Counter(
            "asyncbatch_watcher_pause_duration_seconds",
            "Time watchers were paused by 429s",
            registry=registry,
        ),
        events=Counter(
            "asyncbatch_watcher_events",
            "Events handed to consumers, by kind",
            ["kind"],
            registry=registry,
        ),
        tracked=Gauge(
            "asyncbatch_watcher_batches_tracked", "Batches being watched", registry=registry
        ),
        open=Gauge(
            "asyncbatch_watcher_batches_open",
            "Watched batches without a final event",
            registry=registry,
        ),
        active=Gauge(
            "asyncbatch_watcher_batches_active",
            "Watched batches pending, processing or canceling",
            registry=registry,
        ),
        items=Gauge(
            "asyncbatch_watcher_items",
            "Items of open watched batches, by status",
            ["status"],
            registry=registry,
        ),
        job_items=Gauge(
            "asyncbatch_job_items", "A job's requests by status", ["status"], registry=registry
        ),
        job_batches=Gauge(
            "asyncbatch_job_batches",
            "A job's batches, active or done",
            ["state"],
            registry=registry,
        ),
        job_attempts=Gauge(
            "asyncbatch_job_attempts", "A job's item submissions so far", registry=registry
        ),
    )
    _REGISTERED[registry] = made
    return made


class PrometheusHooks(TelemetryHooks):
    """Records asyncbatch's signals in ``registry`` (default: prometheus_client's global one).

    Several instances on one registry share its metrics. The metrics, their types
    and labels are listed in ``docs/telemetry.md``; no label ever holds a batch ID.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY  # noqa: PLC0415 - the optional extra

        self.registry = REGISTRY if registry is None else registry
        self._m = _metrics(self.registry)
        # Label children by their values: `labels()` takes a lock and builds a tuple per call.
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        key = (method, endpoint, outcome)
        children = self._request_children.get(key)
        if children is None:
            children = self._m.requests.labels(*key), self._m.duration.labels(*key)
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def retry(self, endpoint: str, reason: str, delay: float | None) -> None:
        self._m.retries.labels(endpoint, reason).inc()

    def rate_limit_pause(self, seconds: float) -> None:
        self._m.pauses.inc()
        self._m.paused.inc(max(0.0, seconds))

    def event(self, kind: str) -> None:
        self._m.events.labels(str(kind)).inc()

    def batches(self, *, tracked: int, open: int, active: int) -> None:
        self._m.tracked.inc(tracked)
        self._m.open.inc(open)
        self._m.active.inc(active)

    def items(self, changes: Mapping[str, int]) -> None:
        for status, change in changes.items():
            self._m.items.labels(status).inc(change)

    def job_progress(self, job: str, progress: JobProgress) -> None:
        for status, count in progress.items.items():
            self._m.job_items.labels(status).set(count)
        self._m.job_batches.labels("active").set(progress.batches_active)
        self._m.job_batches.labels("done").set(progress.batches_done)
        self._m.job_attempts.set(progress.attempts)
