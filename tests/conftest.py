"""Every async test runs on asyncio with virtual time: sleeps and timeouts cost no wall time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asyncbatch.testing import VirtualTimeLoop
from tests._redis_server import redis_server


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A redis-server of the test module's own (skipped, or failed in CI, without one)."""
    with redis_server() as url:
        yield url
