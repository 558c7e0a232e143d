"""The live view in a real pseudo-terminal: `python -m asyncbatch demo` as a subprocess on a pty."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")


def _run_on_pty(
    argv: list[str], env: dict[str, str], *, interrupt_after: bytes | None = None
) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a 40x160 pty; read it all until the process exits.

    With ``interrupt_after``, send SIGINT (Ctrl-C) once that text has appeared.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)  # the child holds the only copy: reading ends when it exits
    output = b""
    try:
        while chunk := _read(master):
            output += chunk
            if interrupt_after is not None and interrupt_after in output:
                process.send_signal(signal.SIGINT)
                interrupt_after = None
    finally:
        os.close(master)
        status = process.wait(timeout=30)
    return status, output.decode("utf-8", "replace")


def _read(master: int) -> bytes:
    try:
        return os.read(master, 65536)
    except OSError as exc:  # Linux answers EIO once the last slave end closes
        if exc.errno != errno.EIO:
            raise
        return b""


def test_demo_draws_the_live_view_on_a_terminal() -> None:
    """On a pty the demo redraws a rich table in place, ends by itself, and exits 0 with no key."""
    env = {k: v for k, v in os.environ.items() if "TWELVE" not in k}
    env |= {"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    status, text = _run_on_pty(
        [sys.executable, "-m", "asyncbatch", "demo", "--time-scale", "500"], env
    )
    assert status == 0, text
    assert "\x1b[" in text  # escape sequences: colours and cursor movement
    assert "asyncbatch watch: 5 batch(es)" in text
    assert "█" in text  # the progress bars
    assert "Summary: 5 batch(es) watched" in text
    assert "To do the same against the real API" in text
    assert "Traceback" not in text


def test_simulate_serves_until_ctrl_c() -> None:
    """simulate prints its URL on the terminal, then Ctrl-C stops it: status 130, no traceback."""
    env = {k: v for k, v in os.environ.items() if "TWELVE" not in k}
    argv = [sys.executable, "-m", "asyncbatch", "simulate", "--port", "0", "--api-key", "k-9c1d"]
    status, text = _run_on_pty(argv, env, interrupt_after=b"Ctrl-C stops it.")
    assert status == 130, text
    assert "http://127.0.0.1:" in text
    assert "asyncbatch: interrupted" in text
    assert "Traceback" not in text
    assert "k-9c1d" not in text
