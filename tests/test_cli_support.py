"""Helpers for the command-line tests (no tests here): run `asyncbatch._cli.main.run` with captured
streams against an in-process simulator, and check what every command promises."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from asyncbatch._cli.main import run
from asyncbatch.testing import Simulator

KEY = "tl-cli-test-key-5d41402abc4b2a76"
"""The simulator's key; no test output may ever contain it."""

MISSING_ID = "0123456789abcdef01234567"
"""A well-formed batch ID that no simulator batch has."""


@dataclass(frozen=True)
class Outcome:
    """What one command line did."""

    status: int
    out: str
    err: str

    def json_lines(self) -> list[Any]:
        """Each stdout line decoded as JSON."""
        return [json.loads(line) for line in self.out.splitlines()]

    def error_line(self) -> str:
        """The single ``asyncbatch: error: ...`` line on stderr (asserts there is exactly one)."""
        lines = self.err.splitlines()
        errors = [line for line in lines if line.startswith("asyncbatch: error: ")]
        assert len(errors) == 1, self.err
        assert "Traceback" not in self.err
        return errors[0]


async def cli(
    *argv: str,
    base_url: str | None = None,
    key: str | None = KEY,
    stdin: str = "",
) -> Outcome:
    """Run ``asyncbatch ARGV`` with the key and base URL in its environment."""
    env = {}
    if key is not None:
        env["TWELVELABS_API_KEY"] = key
    if base_url is not None:
        env["TWELVELABS_BASE_URL"] = base_url
    out, err = io.StringIO(), io.StringIO()
    status = await run(list(argv), out, err, stdin=io.StringIO(stdin), env=env)
    outcome = Outcome(status, out.getvalue(), err.getvalue())
    for secret in {KEY, key or KEY}:
        assert secret not in outcome.out
        assert secret not in outcome.err
    return outcome


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[Simulator]:
    """A simulator on the test's (virtual) clock, with `KEY` as its key."""
    options.setdefault("seed", 3)
    options.setdefault("item_seconds", 10.0)
    async with Simulator(api_key=KEY, **options) as sim:
        yield sim
