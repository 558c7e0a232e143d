"""Every code block of README.md and docs/*.md runs against the simulator on virtual time and
prints what the docs say it prints (see tests/_docs.py for the rules)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asyncbatch.testing import Simulator
from tests._docs import SESSION_KEY, Session, blocks, check_json, matches

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
async def test_every_code_block_runs_and_prints_what_the_docs_say(
    path: Path, tmp_path: Path
) -> None:
    """Every code block of the README and docs/ runs against the simulator and prints what the docs
    show; a skipped block says why and every block is marked with its language."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # as on a fresh clone
    found = blocks(path)
    assert found, f"{path.name} has no code blocks"
    async with Simulator(api_key=SESSION_KEY, seed=5, item_seconds=30) as sim:
        session = Session(sim, tmp_path)
        for block in found:
            where = f"{path.name} line {block.line}"
            if block.directive == "skip":
                assert block.reason, f"{where}: a skipped block says why"
                continue
            if block.directive == "output":
                assert matches(block.code, session.printed), (
                    f"{where}: printed\n{session.printed}\nbut the docs say\n{block.code}"
                )
                continue
            if block.language == "python":
                await session.python(block)
            elif block.language == "console":
                for command, expected, got in await session.console(block):
                    assert matches(expected, got), (
                        f"{where}: `{command}` printed\n{got}\nbut the docs say\n{expected}"
                    )
            elif block.language == "json":
                check_json(block)
            else:
                assert block.language == "text", f"{where}: unmarked {block.language!r} block"


def test_the_runner_compares_with_ellipsis() -> None:
    """The docs runner's `...` matches any text in a line, and different numbers do not match."""
    assert matches("batch ... done\n", "batch 6a6c33815627a2798966f59e done\n")
    assert not matches("2 result(s)\n", "3 result(s)\n")
