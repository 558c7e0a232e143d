"""The API key stays secret under faults, plain HTTP stays loopback-only, TLS is verified.

tests/test_errors.py covers the client's reprs and error chains for single
calls; this file covers the watcher, every injected fault kind, the command
line under faults, tricky base URLs and a real TLS handshake.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from asyncbatch import (
    APIConnectionError,
    AsyncBatchError,
    Client,
    ConfigurationError,
    Event,
    RetryPolicy,
)
from asyncbatch.testing import FaultKind, FaultRule, Simulator
from tests.test_cli_support import KEY as CLI_KEY
from tests.test_cli_support import cli, simulator

pytestmark = pytest.mark.anyio

KEY = "tl-secret-soak-4f9d2c7e1b8a-DO-NOT-PRINT"
ONE_TRY = RetryPolicy(max_attempts=1)
MISSING = "0123456789abcdef01234567"


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _texts_of_error(error: BaseException) -> list[str]:
    """Everything a log line or a crash report could print about ``error`` and its causes."""
    texts = ["".join(traceback.format_exception(error))]
    for link in _chain(error):
        texts += [str(link), repr(link), repr(vars(link)) if hasattr(link, "__dict__") else ""]
    return texts


def _texts_of_records(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter()
    texts = []
    for record in records:
        texts += [record.getMessage(), repr(record.args), formatter.format(record)]
    return texts


async def test_a_faulted_watch_leaks_no_key(caplog: pytest.LogCaptureFixture) -> None:
    """Under every fault kind, no event, error chain, repr or DEBUG log record holds the key."""
    caplog.set_level(logging.DEBUG)
    async with (
        Simulator(api_key=KEY, seed=5, fault_rate=0.5, item_seconds=10.0, max_active=50) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        ids = [sim.create_batch(3)["batch_id"] for _ in range(8)] + [MISSING]
        events: list[Event] = []
        options: dict[str, Any] = {
            "min_interval": 2.0,
            "max_failures": 3,
            "max_decode_failures": 1,
            "seed": 1,
        }
        async with client.watch(ids, strategy="per_id", **options) as watcher:
            texts = [repr(watcher), str(watcher)]
            async for event in watcher:
                events.append(event)
            texts += [repr(watcher), repr(watcher.statistics())]
        # The watcher retries by itself, silently; the client's own retries log at DEBUG.
        for batch_id in ids[:6]:
            try:
                await client.batches.retrieve(batch_id, retry=RetryPolicy(max_attempts=6))
            except AsyncBatchError as exc:
                texts += _texts_of_error(exc)
        texts += [repr(client), repr(client.batches), repr(sim)]
    assert {e.batch_id for e in events if e.is_final} == set(ids)
    errors = [e.error for e in events if e.error is not None]
    assert len(errors) >= 2, "the missing batch, and some batch given up under faults"
    texts += [repr(e) for e in events]
    for error in errors:
        texts += _texts_of_error(error)
    assert sum(sim.stats.faults.values()) > 20
    texts += _texts_of_records(caplog.records)
    assert caplog.records, "retries and failures are logged at DEBUG"
    assert not [t for t in texts if KEY in t]


async def _every_call(client: Client, batch_id: str) -> list[BaseException]:
    """Each endpoint once; the errors they raised."""
    errors: list[BaseException] = []
    calls: list[Any] = [
        lambda: client.batches.retrieve(batch_id, retry=ONE_TRY),
        lambda: client.batches.cancel(batch_id, retry=ONE_TRY),
        lambda: _drain_list(client),
        lambda: _drain_results(client, batch_id),
        lambda: client.batches.create(
            [{"video": {"type": "asset_id", "asset_id": "a"}}],
            defaults={"prompt": {"input_text": "Summarise."}},
            retry=ONE_TRY,
        ),
    ]
    for call in calls:
        try:
            await call()
        except AsyncBatchError as exc:
            errors.append(exc)
    return errors


async def _drain_list(client: Client) -> None:
    async for _ in client.batches.list(retry=ONE_TRY):
        pass


async def _drain_results(client: Client, batch_id: str) -> None:
    async with client.batches.results(batch_id, retry=ONE_TRY) as items:
        async for _ in items:
            pass


@pytest.mark.parametrize("kind", [k for k in FaultKind if k is not FaultKind.LATENCY])
async def test_every_fault_kind_on_every_endpoint_leaks_no_key(kind: FaultKind) -> None:
    """Each fault kind on each endpoint raises a typed error whose whole chain omits the key."""
    rule = FaultRule(rate=1.0, kinds=[kind], retry_after=1.0)
    async with (
        Simulator(api_key=KEY, seed=2, faults=[rule], max_active=50) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        errors = await _every_call(client, sim.create_batch(2)["batch_id"])
    assert errors or kind is FaultKind.STALE  # a stale read is a valid answer
    texts = [text for error in errors for text in _texts_of_error(error)]
    assert not [t for t in texts if KEY in t]


@pytest.mark.parametrize(
    "argv",
    [
        ("status", "{id}"),
        ("list",),
        ("results", "{id}"),
        ("watch", "--jsonl", "--interval", "2", "--max-failures", "2", "{id}"),
        ("cancel", "{id}"),
    ],
)
async def test_the_command_line_under_faults_prints_no_key(argv: tuple[str, ...]) -> None:
    """Commands against a simulator failing half its answers, key given on the command line and
    in the environment: neither output stream ever shows it (`cli` checks), whatever happens."""
    async with simulator(fault_rate=0.5, max_active=50) as sim:
        batch_id = sim.create_batch(2)["batch_id"]
        args = [a.format(id=batch_id) for a in argv]
        for run in range(3):  # the fault draws go on between runs, so each run fails differently
            outcome = await cli(*args, "--api-key", CLI_KEY, base_url=sim.base_url)
            # 0 or 1 (failed): never 2, which would mean the key or the usage was refused.
            assert outcome.status in {0, 1}, (run, outcome)
            assert "Traceback" not in outcome.err
        assert sum(sim.stats.faults.values()) > 0


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1.3",
        "http://localhost.evil.example/v1.3",
        "http://127.0.0.1.nip.io/v1.3",
        "http://localhost@evil.example/v1.3",
        "http://evil.example#@127.0.0.1/v1.3",
        "http://[::ffff:8.8.8.8]/v1.3",
        "http://10.0.0.1/v1.3",
        "http://0.0.0.0/v1.3",
    ],
)
def test_plain_http_to_anything_but_loopback_is_refused(url: str) -> None:
    """http:// is refused unless the host really is loopback, whatever the URL tricks."""
    with pytest.raises(ConfigurationError, match="clear"):
        Client(api_key=KEY, base_url=url)
    Client(api_key=KEY, base_url=url, allow_insecure_http=True)  # the explicit opt-in


@pytest.mark.parametrize(
    "url", ["http://[::1]:8000/v1.3", "http://127.8.9.10/v1.3", "HTTP://LOCALHOST:1/v1.3"]
)
def test_plain_http_to_loopback_in_any_spelling_is_allowed(url: str) -> None:
    """Every loopback spelling may use plain http:// (the simulator, a local proxy)."""
    assert Client(api_key=KEY, base_url=url).base_url == url


async def test_a_url_the_parsers_read_differently_never_gets_the_key() -> None:
    """A backslash in the authority (a host to urllib, an error to aiohttp): a typed error,
    raised at construction or at the first call, and no request goes anywhere."""
    url = "http://evil.example\\@127.0.0.1/v1.3"
    try:
        client = Client(api_key=KEY, base_url=url)
    except ConfigurationError:
        return
    async with client:
        with pytest.raises(APIConnectionError, match="invalid URL"):
            await client.batches.retrieve(MISSING, retry=ONE_TRY)


def test_plain_http_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TWELVELABS_BASE_URL gets the same check as the argument."""
    monkeypatch.setenv("TWELVELABS_BASE_URL", "http://api.example.com/v1.3")
    with pytest.raises(ConfigurationError):
        Client(api_key=KEY)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command (the cryptography package is not installed)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_certificates_are_verified_by_default(tmp_path: Path) -> None:
    """An https server with a self-signed certificate is refused: APIConnectionError naming
    the certificate, no request handled, the key never sent over the unverified channel."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handled: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        handled.append(request)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Client(api_key=KEY, base_url=f"https://127.0.0.1:{port}/v1.3") as client:
            with pytest.raises(APIConnectionError, match="certificate") as info:
                await client.batches.retrieve("68f4ddaf8aaa60d33df0e800")
    finally:
        await runner.cleanup()
    assert handled == []
    assert KEY not in str(info.value)
