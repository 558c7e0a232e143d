"""OpenTelemetry, with the real SDK: the official aiohttp instrumentation through
``Client(trace_configs=...)`` (spans by URL template, resends counted, no secret in any
attribute) and `OTelMetricsHooks` (conventional names and units, no batch ID)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.aiohttp_client import (
    AioHttpClientInstrumentor,
    create_trace_config,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asyncbatch
from asyncbatch import Client, ConfigurationError, OTelMetricsHooks, url_template_trace_config
from asyncbatch.testing import FaultRule, Simulator
from tests._server import API_KEY, BATCH_ID, STATUS_BODIES, Reply, ScriptedServer, connected

pytestmark = pytest.mark.anyio

PASSWORD = "pw-userinfo-SECRET"


class Traced:
    """A tracer and meter provider of the SDK whose spans and metrics a test can read."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def metrics(self) -> dict[str, list[Any]]:
        """Each metric's name to its data points."""
        data: MetricsData | None = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def units(self) -> dict[str, str]:
        data = self.reader.get_metrics_data()
        return {
            metric.name: metric.unit or ""
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def official_config(self) -> aiohttp.TraceConfig:
        """The instrumentation's trace config, in the stable HTTP conventions."""
        return create_trace_config(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            sem_conv_opt_in_mode=_StabilityMode.HTTP,
        )


@pytest.fixture
def traced() -> Iterator[Traced]:
    telemetry = Traced()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def with_userinfo(url: str) -> str:
    return url.replace("http://", f"http://reader:{PASSWORD}@")


def all_attribute_text(spans: list[ReadableSpan]) -> str:
    return " ".join(f"{k}={v!r}" for s in spans for k, v in (s.attributes or {}).items())


async def test_official_instrumentation_makes_one_span_per_attempt_named_by_url_template(
    traced: Traced,
) -> None:
    """A 503 then a 200: two spans, both ``GET /analyze/batches/{batch_id}``, the second with
    ``http.request.resend_count`` 1; no API key, password or user name in any attribute, and
    the instrumentation's ``http.client.request.duration`` has both attempts."""
    async with ScriptedServer() as server:
        path = f"/analyze/batches/{BATCH_ID}"
        server.on("GET", path, Reply(503, {}), Reply(200, STATUS_BODIES["pending"]))
        async with Client(
            api_key=API_KEY,
            base_url=with_userinfo(server.url),
            retry=asyncbatch.RetryPolicy(max_attempts=3, initial_delay=0.1),
            trace_configs=[traced.official_config()],
        ) as client:
            batch = await client.batches.retrieve(BATCH_ID)
    assert batch.status == "pending"
    spans = traced.spans()
    assert [s.name for s in spans] == ["GET /analyze/batches/{batch_id}"] * 2
    first, second = (dict(s.attributes or {}) for s in spans)
    assert "http.request.resend_count" not in first
    assert second["http.request.resend_count"] == 1
    assert first["url.template"] == second["url.template"] == "/analyze/batches/{batch_id}"
    assert [a["http.response.status_code"] for a in (first, second)] == [503, 200]
    text = all_attribute_text(spans)
    assert API_KEY not in text
    assert PASSWORD not in text
    assert "reader" not in text
    durations = traced.metrics()["http.client.request.duration"]
    assert sum(point.count for point in durations) == 2
    assert all(BATCH_ID not in str(point.attributes) for point in durations)


async def test_the_global_instrumentor_with_the_url_template_config_names_spans_too(
    traced: Traced,
) -> None:
    """``AioHttpClientInstrumentor().instrument(trace_configs=[url_template_trace_config()])``
    appends its own config after ours: the span is still renamed, once headers go out."""
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(
        tracer_provider=traced.tracer_provider,
        meter_provider=traced.meter_provider,
        trace_configs=[url_template_trace_config()],
    )
    try:
        async with connected() as (server, client):
            server.on("GET", "/analyze/batches", Reply(200, {"data": [], "page_info": {}}))
            server.on(
                "POST",
                f"/analyze/batches/{BATCH_ID}/cancel",
                Reply(200, STATUS_BODIES["canceling"]),
            )
            assert [b async for b in client.batches.list()] == []
            await client.batches.cancel(BATCH_ID)
    finally:
        instrumentor.uninstrument()
    names = [s.name for s in traced.spans()]
    assert names == ["GET /analyze/batches", "POST /analyze/batches/{batch_id}/cancel"]


async def test_a_span_the_instrumentation_did_not_make_is_never_renamed(traced: Traced) -> None:
    """Around a request without the instrumentation, the caller's own current span keeps
    its name: only the aiohttp instrumentation's spans are touched."""
    tracer = traced.tracer_provider.get_tracer("the-callers-service")
    async with ScriptedServer() as server:
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(200, STATUS_BODIES["pending"]))
        async with aiohttp.ClientSession(trace_configs=[url_template_trace_config()]) as session:
            client = Client(api_key=API_KEY, base_url=server.url, session=session)
            with tracer.start_as_current_span("GET"):
                await client.batches.retrieve(BATCH_ID)
            await client.aclose()
    assert [s.name for s in traced.spans()] == ["GET"]
    assert "url.template" not in (traced.spans()[0].attributes or {})


async def test_trace_configs_with_a_borrowed_session_is_a_configuration_error() -> None:
    """The client cannot add trace configs to a session it did not make: it says so."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigurationError, match="create your own session with them"):
            Client(api_key=API_KEY, session=session, trace_configs=[url_template_trace_config()])


EXPECTED_UNITS = {
    "asyncbatch.client.requests": "{request}",
    "asyncbatch.client.request.duration": "s",
    "asyncbatch.client.retries": "{retry}",
    "asyncbatch.watcher.pauses": "{pause}",
    "asyncbatch.watcher.pause.duration": "s",
    "asyncbatch.watcher.events": "{event}",
    "asyncbatch.watcher.batches.tracked": "{batch}",
    "asyncbatch.watcher.batches.open": "{batch}",
    "asyncbatch.watcher.batches.active": "{batch}",
    "asyncbatch.watcher.items": "{item}",
}


async def test_otel_metrics_hooks_record_a_watch_with_conventional_names_and_no_batch_id(
    traced: Traced,
) -> None:
    """A watch through 503s and 429s: every instrument has its documented unit, requests
    and events add up to what the simulator and the consumer saw, the up-down counters
    are back at zero once the watcher exited, and no attribute holds a batch ID."""
    faults = [FaultRule(rate=0.3, kinds=["503", "429"], endpoints=["retrieve"])]
    asyncbatch.set_telemetry_hooks(OTelMetricsHooks(traced.meter_provider))
    try:
        async with Simulator(api_key=API_KEY, seed=4, item_seconds=30.0, faults=faults) as sim:
            ids = [sim.create_batch(n)["batch_id"] for n in (2, 3, 4)]
            async with Client(api_key=API_KEY, base_url=sim.base_url) as client:
                async with client.watch(ids, min_interval=5.0, strategy="per_id") as watcher:
                    kinds = [event.kind async for event in watcher]
                stats = watcher.statistics()
            served = sim.stats.total_requests
    finally:
        asyncbatch.set_telemetry_hooks()
    metrics = traced.metrics()
    assert {k: v for k, v in traced.units().items() if k in EXPECTED_UNITS} == EXPECTED_UNITS
    assert sum(p.value for p in metrics["asyncbatch.client.requests"]) == served
    events = {p.attributes["kind"]: p.value for p in metrics["asyncbatch.watcher.events"]}
    assert events == {kind: kinds.count(kind) for kind in set(kinds)}
    assert sum(p.value for p in metrics["asyncbatch.watcher.pauses"]) == stats.rate_limited > 0
    assert sum(p.value for p in metrics["asyncbatch.client.retries"]) == stats.retries > 0
    for name in ("tracked", "open", "active"):
        assert [p.value for p in metrics[f"asyncbatch.watcher.batches.{name}"]] == [0]
    assert all(p.value == 0 for p in metrics["asyncbatch.watcher.items"])
    for points in metrics.values():
        for point in points:
            assert not any(b in str(point.attributes) for b in ids)
