"""Telemetry hooks: what the transport and the watcher report, templated endpoints, the
gauges' bookkeeping back to zero, a failing hook, and the logging integration."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncbatch
from asyncbatch import (
    Client,
    JobProgress,
    LoggingHooks,
    TelemetryHooks,
    set_telemetry_hooks,
    telemetry_hooks,
)
from asyncbatch._telemetry import endpoint_of, report_job_progress
from asyncbatch.testing import FaultRule, Simulator
from tests._server import API_KEY, BATCH_ID, STATUS_BODIES, Reply, connected

pytestmark = pytest.mark.anyio


@dataclass
class Recorder(TelemetryHooks):
    """Keeps every signal, and checks the gauges' running totals as they change."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)
    retries: list[tuple[str, str, float | None]] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    items_now: Counter[str] = field(default_factory=Counter)
    jobs: list[tuple[str, JobProgress]] = field(default_factory=list)

    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((method, endpoint, outcome))

    def retry(self, endpoint: str, reason: str, delay: float | None) -> None:
        self.retries.append((endpoint, reason, delay))

    def rate_limit_pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def event(self, kind: str) -> None:
        self.events[kind] += 1

    def batches(self, *, tracked: int, open: int, active: int) -> None:
        self.totals.update({"tracked": tracked, "open": open, "active": active})
        assert min(self.totals.values()) >= 0
        assert self.totals["active"] <= self.totals["open"] <= self.totals["tracked"]

    def items(self, changes: Mapping[str, int]) -> None:
        assert changes
        assert all(changes.values())
        self.items_now.update(changes)
        assert min(self.items_now.values()) >= 0

    def job_progress(self, job: str, progress: JobProgress) -> None:
        self.jobs.append((job, progress))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    hooks = Recorder()
    set_telemetry_hooks(hooks)
    yield hooks
    set_telemetry_hooks()


ID = st.text("0123456789abcdef", min_size=24, max_size=24)


@given(
    prefix=st.sampled_from(["", "/v1.3", "/proxy/v1.3"]),
    batch_id=ID,
    tail=st.sampled_from(["", "/results", "/cancel"]),
)
def test_endpoint_templates_never_hold_a_batch_id(prefix: str, batch_id: str, tail: str) -> None:
    """Any batch path, under any base path, becomes one of a fixed set of templates."""
    template = endpoint_of(f"{prefix}/analyze/batches/{batch_id}{tail}")
    assert template == "/analyze/batches/{batch_id}" + tail
    assert endpoint_of(f"{prefix}/analyze/batches") == "/analyze/batches"


def test_set_telemetry_hooks_installs_replaces_and_turns_off() -> None:
    """Hooks are installed, replaced by the next call, removed by a call without any, and
    anything that is not a `TelemetryHooks` is refused."""
    first, second = TelemetryHooks(), LoggingHooks()
    try:
        set_telemetry_hooks(first)
        assert telemetry_hooks() == (first,)
        set_telemetry_hooks(first, second)
        assert telemetry_hooks() == (first, second)
        with pytest.raises(TypeError, match="TelemetryHooks"):
            set_telemetry_hooks(print)  # type: ignore[arg-type]
    finally:
        set_telemetry_hooks()
    assert telemetry_hooks() == ()


async def test_a_client_call_reports_each_attempt_and_its_retry(recorder: Recorder) -> None:
    """A 503 then a 200: two attempts by template and outcome, one retry with its delay."""
    async with connected() as (server, client):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(503, {}),
            Reply(200, STATUS_BODIES["pending"]),
        )
        await client.batches.retrieve(BATCH_ID)
    endpoint = "/analyze/batches/{batch_id}"
    assert recorder.requests == [("GET", endpoint, "ServerError"), ("GET", endpoint, "ok")]
    [(retried, reason, delay)] = recorder.retries
    assert (retried, reason) == (endpoint, "ServerError")
    assert delay is not None
    assert delay > 0


async def test_a_watch_reports_events_pauses_retries_and_its_counts_back_to_zero(
    recorder: Recorder,
) -> None:
    """Through 503s and 429s: one request signal per request served, each event's kind,
    a pause per 429 and a retry per rescheduled failure (as the watcher counts them), items
    that match the open batches' newest snapshots, and every gauge back at zero at exit."""
    faults = [FaultRule(rate=0.3, kinds=["503", "429"], endpoints=["retrieve"])]
    async with Simulator(api_key=API_KEY, seed=2, item_seconds=30.0, faults=faults) as sim:
        ids = [sim.create_batch(n)["batch_id"] for n in (2, 3, 5)]
        async with Client(api_key=API_KEY, base_url=sim.base_url) as client:
            async with client.watch(ids, min_interval=5.0, strategy="per_id") as watcher:
                newest: dict[str, asyncbatch.Batch] = {}
                checked = 0
                async for event in watcher:
                    if event.is_final:
                        newest.pop(event.batch_id, None)
                    elif event.batch is not None:
                        newest[event.batch_id] = event.batch
                    assert recorder.totals["tracked"] == 3
                    if watcher.statistics().buffered:
                        continue  # reported when emitted: compare once the consumer caught up
                    for status in ("queued", "processing", "ready", "failed"):
                        expected = sum(getattr(b, f"{status}_items") for b in newest.values())
                        assert recorder.items_now[status] == expected
                    checked += 1
                stats = watcher.statistics()
            served = sim.stats.total_requests
    assert checked > 5
    assert len(recorder.requests) == served
    assert {endpoint for _, endpoint, _ in recorder.requests} == {"/analyze/batches/{batch_id}"}
    assert sum(recorder.events.values()) == stats.events
    assert recorder.events["done"] == 3
    assert len(recorder.pauses) == stats.rate_limited > 0
    assert all(seconds > 0 for seconds in recorder.pauses)
    assert len(recorder.retries) == stats.retries > 0
    assert +recorder.totals == Counter()
    assert +recorder.items_now == Counter()


async def test_a_discarded_batch_and_added_ones_keep_the_counts_exact(recorder: Recorder) -> None:
    """Batches added while watching count at once; a discarded open batch leaves the items and
    active counts with it; nothing is left over once the watcher exits."""
    async with Simulator(api_key=API_KEY, seed=3, item_seconds=60.0) as sim:
        first, second, third = (sim.create_batch(n)["batch_id"] for n in (2, 2, 3))
        async with (
            Client(api_key=API_KEY, base_url=sim.base_url) as client,
            client.watch([first], min_interval=5.0, stop_when_done=False) as watcher,
        ):
            watcher.add(second)
            watcher.add(third)
            assert recorder.totals["tracked"] == 3
            seen: set[str] = set()
            async for event in watcher:
                seen.add(event.batch_id)
                if seen == {first, second, third}:
                    break
            assert recorder.totals["active"] == 3
            watcher.discard(second)
            assert (recorder.totals["tracked"], recorder.totals["active"]) == (2, 2)
            assert recorder.items_now.total() == 5  # the two batches left: 2 and 3 items
    assert +recorder.totals == Counter()
    assert +recorder.items_now == Counter()


class Broken(TelemetryHooks):
    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("a hook's own bug")


async def test_a_failing_hook_never_breaks_a_request_and_is_logged_once(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises is logged once per method and skipped; the others still get the
    signal and every request succeeds."""
    set_telemetry_hooks(Broken(), recorder)
    async with connected() as (server, client):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(200, STATUS_BODIES["pending"]))
        with caplog.at_level(logging.ERROR, "asyncbatch"):
            for _ in range(3):
                await client.batches.retrieve(BATCH_ID)
    assert len(recorder.requests) == 3
    failures = [r for r in caplog.records if "telemetry hook" in r.getMessage()]
    assert len(failures) == 1
    assert "request()" in failures[0].getMessage()


async def test_logging_hooks_put_each_signal_in_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Requests at DEBUG and retries at INFO, each with its fields as record attributes and
    no batch ID in the message."""
    set_telemetry_hooks(LoggingHooks())
    try:
        async with connected() as (server, client):
            server.on(
                "GET",
                f"/analyze/batches/{BATCH_ID}",
                Reply(429, {}, headers={"Retry-After": "2"}),
                Reply(200, STATUS_BODIES["pending"]),
            )
            with caplog.at_level(logging.DEBUG, "asyncbatch.telemetry"):
                await client.batches.retrieve(BATCH_ID)
    finally:
        set_telemetry_hooks()
    records = [r for r in caplog.records if r.name == "asyncbatch.telemetry"]
    signals = [(r.asyncbatch_signal, r.levelno) for r in records]  # type: ignore[attr-defined]
    assert signals == [
        ("request", logging.DEBUG),
        ("retry", logging.INFO),
        ("request", logging.DEBUG),
    ]
    retry = records[1]
    assert retry.endpoint == "/analyze/batches/{batch_id}"  # type: ignore[attr-defined]
    assert retry.reason == "RateLimitError"  # type: ignore[attr-defined]
    assert retry.delay == 2.0  # type: ignore[attr-defined]
    assert all(BATCH_ID not in r.getMessage() for r in records)


def test_job_progress_reaches_the_hooks_and_the_log(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """What the job runner reports arrives as given, and the logging hooks write one line."""
    progress = JobProgress(items={"ready": 7, "failed": 1}, batches_active=2, batches_done=3)
    set_telemetry_hooks(recorder, LoggingHooks())
    with caplog.at_level(logging.INFO, "asyncbatch.telemetry"):
        report_job_progress("job-1", progress)
    assert recorder.jobs == [("job-1", progress)]
    assert caplog.messages == ["job job-1: 7 ready, 1 failed; batches 2 active, 3 done"]
