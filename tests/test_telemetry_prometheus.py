"""Prometheus, with the real ``prometheus_client``: `PrometheusHooks` on a watch (names, types,
label sets, no batch ID), the metric list of docs/telemetry.md, and ``watch --metrics-port``
scraped while it runs."""

from __future__ import annotations

import io
import re
import socket
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from asyncbatch import Client, JobProgress, PrometheusHooks, set_telemetry_hooks, telemetry_hooks
from asyncbatch._cli.main import run
from asyncbatch._telemetry import report_job_progress
from asyncbatch.testing import FaultRule, Simulator
from tests._server import API_KEY
from tests.test_cli_webhooks import free_port

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parent.parent / "docs" / "telemetry.md"

# Each metric family's type and label names; a batch or custom ID is never among them.
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "asyncbatch_client_requests": (
        "counter",
        frozenset({"http_request_method", "url_template", "outcome"}),
    ),
    "asyncbatch_client_request_duration_seconds": (
        "histogram",
        frozenset({"http_request_method", "url_template", "outcome"}),
    ),
    "asyncbatch_client_retries": ("counter", frozenset({"url_template", "error_type"})),
    "asyncbatch_watcher_pauses": ("counter", frozenset()),
    "asyncbatch_watcher_pause_duration_seconds": ("counter", frozenset()),
    "asyncbatch_watcher_events": ("counter", frozenset({"kind"})),
    "asyncbatch_watcher_batches_tracked": ("gauge", frozenset()),
    "asyncbatch_watcher_batches_open": ("gauge", frozenset()),
    "asyncbatch_watcher_batches_active": ("gauge", frozenset()),
    "asyncbatch_watcher_items": ("gauge", frozenset({"status"})),
    "asyncbatch_job_items": ("gauge", frozenset({"status"})),
    "asyncbatch_job_batches": ("gauge", frozenset({"state"})),
    "asyncbatch_job_attempts": ("gauge", frozenset()),
}
HISTOGRAM_LABEL = "le"


def families(
    registry: CollectorRegistry,
) -> dict[str, tuple[str, frozenset[str], list[dict[str, str]]]]:
    """Each family in ``registry``: its type, the label names of its samples, their labels."""
    found = {}
    for metric in registry.collect():
        labels = [dict(sample.labels) for sample in metric.samples]
        names = frozenset(n for ls in labels for n in ls if n != HISTOGRAM_LABEL)
        found[metric.name] = (metric.type, names, labels)
    return found


async def test_a_watch_through_prometheus_hooks_has_asyncbatch_names_and_no_batch_id_label() -> (
    None
):
    """A watch through 503s and 429s: every family is named asyncbatch_..., has its documented
    type and label set, counts what the simulator served and the consumer read, and no label
    value is a batch ID."""
    registry = CollectorRegistry()
    faults = [FaultRule(rate=0.3, kinds=["503", "429"], endpoints=["retrieve"])]
    set_telemetry_hooks(PrometheusHooks(registry))
    try:
        async with Simulator(api_key=API_KEY, seed=6, item_seconds=30.0, faults=faults) as sim:
            ids = [sim.create_batch(n)["batch_id"] for n in (2, 4)]
            async with Client(api_key=API_KEY, base_url=sim.base_url) as client:
                async with client.watch(ids, min_interval=5.0, strategy="per_id") as watcher:
                    kinds = [str(event.kind) async for event in watcher]
                stats = watcher.statistics()
            served = sim.stats.total_requests
        report_job_progress("job", JobProgress(items={"ready": 3}, batches_active=1))
    finally:
        set_telemetry_hooks()
    found = families(registry)
    for name, (kind, names, _) in found.items():
        assert name.startswith("asyncbatch_")
        assert (kind, names) == EXPECTED[name], name
    assert set(found) == set(EXPECTED)
    for _, _, samples in found.values():
        assert not any(b in text for ls in samples for text in ls.values() for b in ids)
    value = registry.get_sample_value
    assert value("asyncbatch_watcher_pauses_total") == stats.rate_limited > 0
    assert value("asyncbatch_watcher_events_total", {"kind": "done"}) == kinds.count("done") == 2
    requests = [s.value for s in _samples(registry, "asyncbatch_client_requests_total")]
    assert sum(requests) == served
    assert value("asyncbatch_watcher_batches_tracked") == 0
    assert value("asyncbatch_job_items", {"status": "ready"}) == 3


def _samples(registry: CollectorRegistry, name: str) -> list[Sample]:
    return [s for m in registry.collect() for s in m.samples if s.name == name]


def test_two_hooks_on_one_registry_share_its_metrics() -> None:
    """A second `PrometheusHooks` on the same registry reuses its metrics instead of failing
    on duplicate names, and both count into them."""
    registry = CollectorRegistry()
    first, second = PrometheusHooks(registry), PrometheusHooks(registry)
    first.event("done")
    second.event("done")
    assert registry.get_sample_value("asyncbatch_watcher_events_total", {"kind": "done"}) == 2


def test_the_documented_metric_list_is_what_is_registered() -> None:
    """docs/telemetry.md's table names every Prometheus family with its type and labels."""
    rows = re.findall(
        r"^\| `(asyncbatch_\w+)` \| (\w+) \|[^|]+\|([^|]*)\|$", DOC.read_text(), re.MULTILINE
    )
    documented = {
        name: (kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    }
    exposed = {
        (f"{name}_total" if kind == "counter" else name): (kind, labels)
        for name, (kind, labels) in EXPECTED.items()
    }
    assert documented == exposed


async def test_watch_with_a_metrics_port_serves_prometheus_text_while_it_runs() -> None:
    """``asyncbatch watch --metrics-port`` answers /metrics with the watch's counts while it
    runs, says where, and leaves no hooks installed when it ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    scraped: list[str] = []
    async with Simulator(api_key=API_KEY, seed=9, item_seconds=60.0) as sim:
        ids = [sim.create_batch(n)["batch_id"] for n in (2, 3)]
        env = {"TWELVELABS_API_KEY": API_KEY, "TWELVELABS_BASE_URL": sim.base_url}
        out, err = io.StringIO(), io.StringIO()

        async def scrape() -> None:
            await anyio.sleep(30.0)  # virtual: the watch is polling by then
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                assert response.status == 200
                assert response.content_type == "text/plain"
                scraped.append(await response.text())

        async with anyio.create_task_group() as group:
            group.start_soon(scrape)
            argv = ["watch", "--jsonl", "--metrics-port", str(port), *ids]
            status = await run(argv, out, err, env=env)
    assert status == 0, err.getvalue()
    assert f"watch: metrics at {url}" in err.getvalue()
    assert telemetry_hooks() == ()
    [text] = scraped
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    tracked = parsed["asyncbatch_watcher_batches_tracked"].samples[0].value
    assert tracked == 2
    events = parsed["asyncbatch_watcher_events"].samples
    assert {s.labels["kind"] for s in events} >= {"seen"}
    assert not any(b in text for b in ids)


async def test_watch_with_a_taken_metrics_port_says_so() -> None:
    """A port already in use is one error line and exit status 1, before any request."""
    async with Simulator(api_key=API_KEY, seed=1) as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        env = {"TWELVELABS_API_KEY": API_KEY, "TWELVELABS_BASE_URL": sim.base_url}
        with _listening() as port:
            out, err = io.StringIO(), io.StringIO()
            status = await run(["watch", "--metrics-port", str(port), batch_id], out, err, env=env)
        served = sim.stats.total_requests
    assert status == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err.getvalue()
    assert served == 0


async def test_watch_with_a_metrics_port_without_prometheus_client_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without prometheus_client the command says which package to install, exit status 2."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    async with Simulator(api_key=API_KEY, seed=1) as sim:
        batch_id = sim.create_batch(1)["batch_id"]
        env = {"TWELVELABS_API_KEY": API_KEY, "TWELVELABS_BASE_URL": sim.base_url}
        out, err = io.StringIO(), io.StringIO()
        status = await run(["watch", "--metrics-port", "0", batch_id], out, err, env=env)
    assert status == 2
    assert "--metrics-port needs prometheus_client: pip install prometheus_client" in err.getvalue()


class _listening:
    """A loopback socket that listens, so its port is taken."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_run_with_a_taken_metrics_port_says_so_before_any_request(tmp_path: Path) -> None:
    """`asyncbatch run --metrics-port` uses the same endpoint as `watch`: a port in use is one
    error line and exit status 1, and no batch is created."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"video": {"asset_id": "a1"}, "custom_id": "c1"}\n')
    out_file = tmp_path / "results.jsonl"
    async with Simulator(api_key=API_KEY, seed=1) as sim:
        env = {"TWELVELABS_API_KEY": API_KEY, "TWELVELABS_BASE_URL": sim.base_url}
        with _listening() as port:
            argv = ["run", str(requests), "--prompt", "Describe.", "--out", str(out_file)]
            out, err = io.StringIO(), io.StringIO()
            status = await run([*argv, "--plain", "--metrics-port", str(port)], out, err, env=env)
        created = sim.stats.requests.get("create", 0)
    assert status == 1, err.getvalue()
    assert f"run: cannot serve metrics on 127.0.0.1:{port}" in err.getvalue()
    assert created == 0
