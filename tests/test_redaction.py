"""One redaction rule for URLs with passwords and for secrets, wherever text leaves us:
reprs, errors and their chains, log records, and the command line's output."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbatch import (
    APIConnectionError,
    AsyncBatchError,
    Client,
    ConfigurationError,
    NotFoundError,
    RetryPolicy,
)
from asyncbatch._redact import MIN_TOKEN_SECRET, redact_url, scrub_secrets
from tests._server import (
    API_KEY,
    BATCH_ID,
    Reply,
    ScriptedServer,
    connected,
    error,
    unused_port,
)
from tests.test_cli_support import cli

pytestmark = pytest.mark.anyio

PASSWORD = "hunter2-pass-WORD"
ONE_TRY = RetryPolicy(max_attempts=1)


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@")


def _everything_about(exc: BaseException) -> str:
    """The error's text, repr, attributes and formatted traceback with its whole chain."""
    attributes = " ".join(f"{k}={v!r}" for k, v in vars(exc).items())
    chain = "".join(traceback.format_exception(exc))
    return f"{exc} {exc!r} {attributes} {chain}"


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:p@127.0.0.1:8/v1", "http://***@127.0.0.1:8/v1"),
        ("https://user@host/x?a=b@c", "https://***@host/x?a=b@c"),
        ("http://u:p@ss@host/", "http://***@host/"),  # an unescaped @ in the password
        ("https://api.twelvelabs.io/v1.3", "https://api.twelvelabs.io/v1.3"),
    ],
)
def test_redact_url_hides_the_whole_userinfo(url: str, shown: str) -> None:
    """``user:password@`` becomes ``***@``, up to the last ``@`` before the path."""
    assert redact_url(url) == shown


async def test_a_password_in_the_base_url_is_in_no_repr_error_or_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``http://alice:PASSWORD@host`` as base URL: the client's and resource's reprs,
    ``base_url``, and every error (404, 500 after retries, a body that does not decode, a
    refused connection), with their chains and every DEBUG log record, hide the password."""
    caplog.set_level(logging.DEBUG, logger="asyncbatch")
    errors: list[BaseException] = []
    async with ScriptedServer() as server:
        server.on("GET", f"/analyze/batches/{BATCH_ID}", error(404, "not_found"))
        server.on("POST", f"/analyze/batches/{BATCH_ID}/cancel", error(500, "boom"))
        server.on("GET", "/analyze/batches", Reply(200, b"<html>"))
        async with Client(
            api_key=API_KEY,
            base_url=_with_password(server.url),
            retry=RetryPolicy(max_attempts=2, initial_delay=0.1),
        ) as client:
            shown = f"{client!r} {client.batches!r} {client.base_url}"
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: client.batches.retrieve(BATCH_ID),
                lambda: client.batches.cancel(BATCH_ID),
                lambda: anext(client.batches.list()),
            ]
            for call in calls:
                with pytest.raises(AsyncBatchError) as caught:
                    await call()
                errors.append(caught.value)
        # The server saw the credentials as HTTP basic auth: the URL was used, not mangled.
        assert server.requests[0].headers["authorization"].startswith("Basic ")
    refused = f"http://alice:{PASSWORD}@127.0.0.1:{unused_port()}/v1.3"
    async with Client(api_key=API_KEY, base_url=refused, retry=ONE_TRY) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.batches.retrieve(BATCH_ID)
        errors.append(caught.value)
    assert "alice:***" not in shown
    assert "***@127.0.0.1" in shown
    for exc in errors:
        assert PASSWORD not in _everything_about(exc)
    not_found, server_error, _undecodable, refused_error = errors
    for exc in (not_found, server_error, refused_error):
        assert "***@127.0.0.1" in str(exc)
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in str(record.args) for record in caplog.records)


def test_a_refused_base_url_is_shown_without_its_password() -> None:
    """ConfigurationError for a non-http URL does not repeat its password."""
    with pytest.raises(ConfigurationError) as caught:
        Client(api_key=API_KEY, base_url=f"ftp://alice:{PASSWORD}@host/x")
    assert PASSWORD not in str(caught.value)


async def test_the_command_line_hides_a_base_url_password_on_stderr_and_in_jsonl() -> None:
    """``status`` (an error line) and ``watch --jsonl`` (an error event on stdout) against a
    base URL with a password never print it."""
    async with connected() as (server, _):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", error(403, "forbidden"))
        url = _with_password(server.url)
        status = await cli("status", BATCH_ID, base_url=url)
        watch = await cli("watch", "--jsonl", BATCH_ID, base_url=url)
    assert status.status == 2
    assert watch.json_lines()[-1]["kind"] == "error"
    for outcome in (status, watch):
        assert PASSWORD not in outcome.out + outcome.err


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "text", "scrubbed"),
    [
        (
            "e",
            "asyncbatch: error: the key e was refused",
            "asyncbatch: error: the key *** was refused",
        ),
        ("e", "--api-key=e", "--api-key=***"),
        ("e", "e-mail and 'e'", "e-mail and '***'"),
        ("abc", "abcdef abc", "abcdef ***"),
        ("tl-key-0123", "x-api-key: tl-key-0123.", "x-api-key: ***."),
        ("tl-key-0123", "tl-key-0123-extra/tl-key-0123", "***-extra/***"),
        ("tl-key-0123", "tl-key-01234 xtl-key-0123", "tl-key-01234 xtl-key-0123"),
        ("p@ss", "redis://:p@ss@host", "redis://***@host"),
    ],
)
def test_the_key_scrubber_matches_whole_tokens_only(secret: str, text: str, scrubbed: str) -> None:
    """A secret is masked where it stands as a token, never inside a longer word; a short
    one only where it stands alone, as the key itself would be printed."""
    assert scrub_secrets(text, [secret]) == scrubbed


@given(
    secret=st.text(alphabet="abcdefXYZ0123_-", min_size=MIN_TOKEN_SECRET, max_size=30),
    before=st.text(alphabet=" :=,/'\"\n.", min_size=1, max_size=3),
    after=st.text(alphabet=" :=,/'\"\n.", min_size=1, max_size=3),
)
def test_a_long_secret_between_separators_is_always_masked(
    secret: str, before: str, after: str
) -> None:
    """Any secret of at least four characters, with anything but word characters around it,
    is gone from the scrubbed text."""
    scrubbed = scrub_secrets(f"x{before}{secret}{after}y", [secret])
    assert secret not in scrubbed.replace("***", "\0")


async def test_a_one_letter_api_key_does_not_mangle_words_on_stderr() -> None:
    """``--api-key e`` against a server that refuses it: stderr still says "error" (not
    "***rror") and the batch ID is intact."""
    async with connected() as (server, _):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", error(401, "unauthorized"))
        outcome = await cli("status", "--api-key", "e", BATCH_ID, base_url=server.url, key=None)
    assert outcome.status == 2
    assert outcome.error_line().startswith("asyncbatch: error: the API key was refused")
    assert "***" not in outcome.err


# -- exception chains --------------------------------------------------------------------


async def test_status_errors_carry_no_private_failure_in_their_chain() -> None:
    """A 404 (not retried) and a 503 (retried, then given up) raise errors whose
    ``__context__`` is not the transport's private failure record, so tracebacks show no
    "During handling of the above exception" block."""
    async with connected() as (server, client):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", error(404, "not_found"))
        server.on("POST", f"/analyze/batches/{BATCH_ID}/cancel", error(503, "busy"))
        with pytest.raises(NotFoundError) as missing:
            await client.batches.retrieve(BATCH_ID)
        with pytest.raises(AsyncBatchError) as busy:
            await client.batches.cancel(BATCH_ID)
    for exc in (missing.value, busy.value):
        assert exc.__context__ is None
        text = "".join(traceback.format_exception(exc))
        assert "_Failure" not in text
        assert "During handling" not in text


async def test_a_password_in_a_job_state_url_is_in_no_repr_or_error(tmp_path: Path) -> None:
    """A job on ``redis://:PASSWORD@host`` state: the job's repr hides the password, and so
    does the command line's error when that Redis cannot be reached."""
    state = f"redis://:{PASSWORD}@127.0.0.1:{unused_port()}/0?socket_connect_timeout=1"
    async with Client(api_key=API_KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        job = client.jobs.run([], state=state)
        assert PASSWORD not in repr(job)
        assert "***@127.0.0.1" in repr(job)
        with pytest.raises(AsyncBatchError) as caught:
            await job.__aenter__()
        assert PASSWORD not in _everything_about(caught.value)
    source = tmp_path / "requests.jsonl"
    source.write_text('{"video": {"asset_id": "a"}}\n')
    args = [str(source), "--prompt", "Hi.", "--out", str(tmp_path / "out.jsonl")]
    outcome = await cli("run", *args, "--state", state, "--plain")
    assert outcome.status == 1
    assert PASSWORD not in outcome.err + outcome.out
