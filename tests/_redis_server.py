"""A throwaway `redis-server` on 127.0.0.1 for the Redis tests, and the rule for its absence.

`redis_server` starts one on a free port with no persistence, in a temporary
directory, waits until it answers PING, and stops it (SIGTERM, then SIGKILL)
however the block ends. Without ``redis-server`` on PATH the tests skip with a
reason that says so, except when ``ASYNCBATCH_REQUIRE_REDIS=1`` (CI): then they
fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress

import pytest
from redis.asyncio import Redis

START_TIMEOUT = 10.0


def redis_server_path() -> str:
    """The ``redis-server`` executable; skips (or, when required, fails) the test without it."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    if os.environ.get("ASYNCBATCH_REQUIRE_REDIS") == "1":
        pytest.fail("redis-server is not installed, and ASYNCBATCH_REQUIRE_REDIS=1 requires it")
    pytest.skip("redis-server is not installed: the Redis store, gate and lease tests need it")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """A running server's URL, ``redis://127.0.0.1:PORT/0``; stopped on exit."""
    executable = redis_server_path()
    with tempfile.TemporaryDirectory(prefix="asyncbatch-redis-") as workdir:
        process, port = _start(executable, workdir)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(process)


def _start(executable: str, workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start on a free port; again on another if someone took it between probe and bind."""
    for attempt in range(3):
        port = _free_port()
        args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir, "--logfile", ""]
        process = subprocess.Popen(  # noqa: S603 - our own fixed arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_until_ready(process, port)
        except RuntimeError:
            stop(process)
            if attempt == 2:
                raise
        else:
            return process, port
    raise AssertionError("unreachable")


def _wait_until_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers_ping(port):
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} on port {port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer on port {port}")
        time.sleep(0.02)  # a real server starting in real time: poll its port


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and reap it; SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[Redis]:
    """A client of the test server, closed after. Without socket timeouts: on the virtual
    clock a timeout is a timer the loop may jump to while Redis is answering."""
    client = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=None)
    try:
        yield client
    finally:
        await client.aclose()


def fresh_prefix() -> str:
    """Keys of their own for each test, so tests share one server without a flush."""
    return f"test:{uuid.uuid4().hex}:"
