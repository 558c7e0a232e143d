"""Every async test runs on asyncio with virtual time: sleeps and timeouts cost no wall time."""

from __future__ import annotations

from typing import Any

import pytest

from asyncbatch.testing import VirtualTimeLoop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})
