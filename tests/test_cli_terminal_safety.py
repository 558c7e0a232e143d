"""Server-chosen strings never reach a terminal with their control characters live.

A status, an analysis mode, an error message or a batch ID comes from the
server; an ESC or a C1 control in one could clear the screen, retitle the
window or hide lines. Every text the command line writes escapes them.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncbatch._cli.main import run
from asyncbatch._cli.render import terminal_text
from tests._server import BATCH_ID, LIST_BODY, STATUS_BODIES, Reply, connected
from tests.test_cli_support import KEY, cli

pytestmark = pytest.mark.anyio

HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\x9b31m\u202egnissecorp\r\b"
RAW = ["\x1b", "\x07", "\x9b", "\u202e", "\r", "\b"]
FAST = ["--interval", "1", "--max-interval", "2"]


def _hostile(shape: str, **changes: Any) -> dict[str, Any]:
    return {**STATUS_BODIES[shape], "status": HOSTILE, "analysis_mode": HOSTILE, **changes}


def _assert_inert(text: str) -> None:
    for raw in RAW:
        assert raw not in text, (raw, text)


def test_terminal_text_escapes_every_control_character() -> None:
    """ESC, BEL, C1 CSI, CR, BS and a bidi override come out as visible escapes."""
    shown = terminal_text(HOSTILE)
    _assert_inert(shown)
    assert shown.startswith("\\x1b]0;PWNED\\x07\\x1b[2J\\x9b31m\\u202e")


@given(st.text())
def test_terminal_text_leaves_no_control_character(text: str) -> None:
    """Whatever the text, no C0/C1 control, DEL or bidi override survives, and printable
    text without backslashes is left as it is."""
    shown = terminal_text(text)
    assert not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u202a\u202b\u202c\u202d\u202e"
        for c in shown
    )
    if text.isprintable():
        assert shown == text


@pytest.mark.parametrize(
    "argv",
    [("status", BATCH_ID), ("list",), ("cancel", BATCH_ID)],
    ids=["status", "list", "cancel"],
)
async def test_status_list_and_cancel_escape_server_strings(argv: tuple[str, ...]) -> None:
    """``status``, ``list`` and ``cancel`` print a hostile status and mode escaped."""
    async with connected() as (server, _):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(200, _hostile("processing")))
        server.on("POST", f"/analyze/batches/{BATCH_ID}/cancel", Reply(200, _hostile("canceling")))
        server.on(
            "GET", "/analyze/batches", Reply(200, {**LIST_BODY, "data": [_hostile("processing")]})
        )
        outcome = await cli(*argv, base_url=server.url)
    assert outcome.status == 0
    _assert_inert(outcome.out + outcome.err)
    assert "\\x1b]0;PWNED" in outcome.out


async def test_error_lines_escape_what_the_server_said() -> None:
    """An error answer whose message holds escape sequences gives an inert error line."""
    body = {"error": {"code": "bad\x1b[2J", "message": HOSTILE}}
    async with connected() as (server, _):
        server.on("GET", f"/analyze/batches/{BATCH_ID}", Reply(400, body))
        server.on("POST", f"/analyze/batches/{BATCH_ID}/cancel", Reply(409, body))
        refused = await cli("status", BATCH_ID, base_url=server.url)
        conflict = await cli("cancel", BATCH_ID, base_url=server.url)
    for outcome in (refused, conflict):
        line = outcome.error_line()
        _assert_inert(outcome.err)
        assert "\\x1b]0;PWNED" in line


async def test_watch_plain_escapes_statuses_and_errors() -> None:
    """``watch --plain``: event lines and the summary show a hostile status escaped."""
    async with connected() as (server, _):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(200, _hostile("processing")),
            Reply(200, STATUS_BODIES["completed"]),
        )
        outcome = await cli("watch", "--plain", *FAST, BATCH_ID, base_url=server.url)
    _assert_inert(outcome.out + outcome.err)
    assert "\\x1b]0;PWNED" in outcome.out
    assert "completed" in outcome.out


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal, as a pty would."""

    def isatty(self) -> bool:
        return True


async def test_the_live_table_escapes_server_strings() -> None:
    """The live table draws its own escape sequences, but none of the server's: no OSC title,
    no BEL, no C1 CSI, no bidi override reaches the terminal."""
    async with connected() as (server, _):
        server.on(
            "GET",
            f"/analyze/batches/{BATCH_ID}",
            Reply(200, _hostile("processing")),
            Reply(200, _hostile("processing", ready_items=2, queued_items=0)),
            Reply(200, STATUS_BODIES["completed"]),
        )
        out, err = _Terminal(), io.StringIO()
        env = {"TWELVELABS_API_KEY": KEY, "TWELVELABS_BASE_URL": server.url}
        await run(["watch", *FAST, BATCH_ID], out, err, env=env)
    text = out.getvalue()
    assert "asyncbatch watch: 1 batch(es)" in text  # the live view did draw
    for raw in ("\x1b]0;", "\x07", "\x9b", "\u202e", "\x1b[2J"):
        assert raw not in text + err.getvalue()
