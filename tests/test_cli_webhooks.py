"""Webhooks on the command line: ``webhook-verify`` on captured deliveries, ``watch
--webhook-port`` fed by a simulator that delivers to it, and ``simulate``'s webhook options."""

from __future__ import annotations

import io
import json
import socket
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

import anyio
import msgspec
import pytest

from asyncbatch._cli.main import run
from asyncbatch.testing import Simulator, SimulatorConfig, serve
from asyncbatch.webhooks import WebhookEvent, serve_webhooks, sign
from tests.test_cli_support import KEY, Outcome, cli

pytestmark = pytest.mark.anyio

SECRET = "whsec-cli-SECRET-0f596565"
NOW = 1_784_544_000
BODY = msgspec.json.encode(
    {
        "id": "whe_0123456789abcdef0123456789abcdef",
        "created_at": "2026-07-20T10:40:00Z",
        "type": "analyze.task.ready",
        "data": {"id": "68f4ddaf8aaa60d33df0e900", "custom_id": "summary-001", "status": "ready"},
    }
)


async def verify_cli(*argv: str, body: bytes = BODY, env: dict[str, str] | None = None) -> Outcome:
    """Run ``asyncbatch webhook-verify ARGV`` with ``body`` on stdin; the secret never shows."""
    out, err = io.StringIO(), io.StringIO()
    status = await run(
        ["webhook-verify", *argv], out, err, stdin=io.StringIO(body.decode()), env=env or {}
    )
    outcome = Outcome(status, out.getvalue(), err.getvalue())
    assert SECRET not in outcome.out + outcome.err
    return outcome


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- webhook-verify -----------------------------------------------------------------------


async def test_verify_prints_the_event_of_a_valid_delivery() -> None:
    """A delivery signed with the secret verifies: exit 0 and the event as one JSON line."""
    header = sign(BODY, SECRET, timestamp=NOW)
    outcome = await verify_cli("--secret", SECRET, "--signature", header, "--now", str(NOW))
    assert outcome.status == 0
    assert outcome.err == ""
    (event,) = outcome.json_lines()
    assert event == json.loads(BODY)


async def test_verify_reads_a_file_and_the_secret_from_the_environment(tmp_path: Path) -> None:
    """The body may be a file argument, the secret $TWELVELABS_WEBHOOK_SECRET; bytes are exact."""
    body = BODY + b"\n"  # a trailing newline is part of what was signed
    path = tmp_path / "body.json"
    path.write_bytes(body)
    header = sign(body, SECRET, timestamp=NOW)
    env = {"TWELVELABS_WEBHOOK_SECRET": SECRET}
    outcome = await verify_cli("--signature", header, "--now", str(NOW), str(path), env=env)
    assert outcome.status == 0
    assert outcome.json_lines()[0]["type"] == "analyze.task.ready"
    stripped = await verify_cli("--signature", header, "--now", str(NOW), body=BODY, env=env)
    assert stripped.status == 1


@pytest.mark.parametrize(
    ("header", "now", "needle"),
    [
        (sign(BODY, "another-secret", timestamp=NOW), NOW, "signature does not match"),
        (sign(BODY, SECRET, timestamp=NOW), NOW + 301, "s old"),
        (sign(BODY, SECRET, timestamp=NOW), NOW - 301, "in the future"),
        ("v1=abc", NOW, "no t= timestamp"),
    ],
)
async def test_verify_refuses_with_one_line_and_status_1(
    header: str, now: int, needle: str
) -> None:
    """A wrong secret, a stale or future timestamp, a malformed header: one error line, exit 1."""
    outcome = await verify_cli("--secret", SECRET, "--signature", header, "--now", str(now))
    assert outcome.status == 1
    assert outcome.out == ""
    line = outcome.error_line()
    assert line.startswith("asyncbatch: error: webhook-verify: ")
    assert needle in line


async def test_verify_tolerance_widens_the_window() -> None:
    """--tolerance accepts a delivery captured an hour before --now."""
    header = sign(BODY, SECRET, timestamp=NOW)
    argv = ("--secret", SECRET, "--signature", header, "--now", str(NOW + 3600))
    assert (await verify_cli(*argv)).status == 1
    assert (await verify_cli(*argv, "--tolerance", "3601")).status == 0


async def test_verify_without_a_secret_or_a_body_that_is_no_event() -> None:
    """No secret is a usage error (2); a verified body that is not an event is an error (1)."""
    header = sign(BODY, SECRET, timestamp=NOW)
    missing = await verify_cli("--signature", header)
    assert missing.status == 2
    assert "TWELVELABS_WEBHOOK_SECRET" in missing.error_line()
    junk = b"[1, 2, 3]"
    outcome = await verify_cli(
        "--secret", SECRET, "--signature", sign(junk, SECRET, timestamp=NOW), "--now", str(NOW),
        body=junk,
    )  # fmt: skip
    assert outcome.status == 1
    assert "not a webhook event" in outcome.error_line()


async def test_verify_help_has_examples_and_no_api_options() -> None:
    """webhook-verify --help shows examples; it needs no API key, so offers no --api-key."""
    outcome = await cli("webhook-verify", "--help", key=None)
    assert outcome.status == 0
    assert "asyncbatch webhook-verify" in outcome.out.split("examples:")[1]
    assert "--api-key KEY" not in outcome.out


# -- watch --webhook-port -----------------------------------------------------------------


async def test_watch_with_a_webhook_port_ends_each_batch_at_its_finish() -> None:
    """A simulator delivering to watch's endpoint: every done comes moments after the finish,
    long before the 30 s polling interval, and the receiver's counts are reported."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/twelvelabs"
    async with Simulator(
        api_key=KEY, seed=8, item_seconds=120.0, webhook_urls=[url], webhook_secret=SECRET
    ) as sim:
        batch_ids = [sim.create_batch(n)["batch_id"] for n in (2, 3)]
        argv = ["watch", "--jsonl", "--webhook-port", str(port), "--webhook-secret", SECRET]
        out, err = io.StringIO(), io.StringIO()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": sim.base_url}
        status = await run([*argv, *batch_ids], out, err, env=env, webhook_clock=sim.unix_now)
        ended = anyio.current_time()
        finished = max(sim.clock_at(_completed_at(sim, b)) for b in batch_ids)
        stats = sim.stats
    outcome = Outcome(status, out.getvalue(), err.getvalue())
    assert outcome.status == 0, outcome.err
    assert SECRET not in outcome.out + outcome.err
    done = [line for line in outcome.json_lines() if line["kind"] == "done"]
    assert sorted(line["batch_id"] for line in done) == sorted(batch_ids)
    assert 0 <= ended - finished < 1.0
    assert f"receiving webhooks at {url}" in outcome.err
    assert "7 accepted" in outcome.err  # five items and two batch ends
    # The first polls, then one refresh per delivery and its follow-up: no busy polling.
    assert stats.total_requests <= 20


def _completed_at(sim: Simulator, batch_id: str) -> datetime:
    return datetime.fromisoformat(sim.batch(batch_id)["completed_at"])


async def test_watch_with_a_webhook_port_needs_a_secret_and_a_free_port() -> None:
    """No secret, or a secret without a port, is a usage error before any request; a port in
    use is one error line."""
    missing = await cli("watch", "--webhook-port", "0", "0123456789abcdef01234567")
    assert missing.status == 2
    assert "--webhook-secret" in missing.error_line()
    no_port = await cli("watch", "--webhook-secret", SECRET, "0123456789abcdef01234567")
    assert no_port.status == 2
    assert "needs --webhook-port" in no_port.error_line()
    async with serve_webhooks(None, secret=SECRET) as taken:
        argv = ("--webhook-port", str(taken.port), "--webhook-secret", SECRET)
        busy = await cli("watch", *argv, "0123456789abcdef01234567", base_url="http://127.0.0.1:9")
    assert busy.status == 1
    assert "cannot receive webhooks on 127.0.0.1" in busy.error_line()


# -- simulate --webhook-url ---------------------------------------------------------------


async def test_simulate_webhook_options_are_checked() -> None:
    """--webhook-url needs a secret (usage error) and an http(s) URL."""
    no_secret = await cli("simulate", "--webhook-url", "http://127.0.0.1:9/hook")
    assert no_secret.status == 2
    assert "--webhook-secret" in no_secret.error_line()
    bad_url = await cli("simulate", "--webhook-url", "ftp://x/hook", "--webhook-secret", SECRET)
    assert bad_url.status == 2
    assert "http" in bad_url.error_line()


async def test_serve_delivers_signed_webhooks_that_a_default_receiver_accepts() -> None:
    """`serve` (behind ``simulate``) signs with the system clock, so a receiver with its default
    clock and tolerance accepts deliveries even at a 1000x time scale."""
    send, receive = anyio.create_memory_object_stream[WebhookEvent](100)
    config = SimulatorConfig(api_key=KEY, port=0, time_scale=1000.0, webhook_secret=SECRET)
    assert SECRET not in repr(config)
    types: list[str] = []
    async with (
        send,
        receive,
        serve_webhooks(None, secret=SECRET, on_event=send.send_nowait) as server,
        anyio.create_task_group() as group,
    ):
        ready = anyio.Event()
        sims: list[Simulator] = []

        def on_ready(sim: Simulator) -> None:
            sims.append(sim)
            ready.set()

        config = replace(config, webhook_urls=(server.url,))
        group.start_soon(partial(serve, config, ready=on_ready))
        await ready.wait()
        sims[0].create_batch(2)
        with anyio.fail_after(600):
            async for event in receive:
                types.append(event.type)
                if event.type.startswith("analyze.batch."):
                    break
        group.cancel_scope.cancel()
    assert types == ["analyze.task.ready", "analyze.task.ready", "analyze.batch.completed"]
    assert server.receiver.statistics().rejected == 0


async def test_status_json_shows_the_webhook_record_as_the_api_sends_it() -> None:
    """A delivered record in ``status --json`` has no ``last_error`` key, as in the API's body."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/twelvelabs"
    async with Simulator(
        api_key=KEY, seed=8, item_seconds=10.0, webhook_urls=[url], webhook_secret=SECRET
    ) as sim:
        async with serve_webhooks(None, secret=SECRET, port=port, clock=sim.unix_now):
            batch_id = sim.create_batch(1)["batch_id"]
            await anyio.sleep(60)
            await sim.webhooks_settled()
        outcome = await cli("status", "--json", batch_id, base_url=sim.base_url)
    (batch,) = outcome.json_lines()
    assert batch["webhooks"] == [{"url": url, "delivered": True, "attempts": 1}]
