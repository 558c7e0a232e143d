"""Runs the code blocks of a Markdown file, in order, and checks what they print.

A fenced block's language says what it is:

- ``python``: executed, in one namespace per file (later blocks see earlier ones' names).
  Top-level ``await`` and ``async with`` are allowed, as in ``python -m asyncio``. A block
  guarded by ``if __name__ == "__main__":`` is a whole program: its definitions are run,
  then its ``main()`` is awaited here (so an ``asyncio.Runner`` or ``anyio.run`` in the
  guard is not nested in this loop). Whatever it prints must match the next block when that
  one is marked ``<!-- docs: output -->`` (``...`` matches anything, as in doctest).
- ``console``: ``$ `` lines are commands, the lines under each are its output (stdout
  and stderr), matched the same way. Commands run in-process on this loop:
  ``asyncbatch`` (``| head -N``, ``| tail -N`` and ``| cat`` allowed), ``export``,
  ``echo $?`` and ``head -N FILE``;
  ``asyncbatch simulate ... &`` starts a fresh simulator with its options for the rest
  of the block.
  A service that runs until Ctrl-C is marked ``<!-- docs: stop-after: SECONDS -->`` and is
  cancelled after that many (virtual) seconds.
- ``text`` and ``json``: not code (diagrams, trees, example payloads); ``json`` must parse.
- anything else, a shell block included, must be marked ``<!-- docs: skip: REASON -->``.

Every session has a simulator whose URL and key are in the environment, as the docs tell
the reader to set them, so ``asyncbatch.Client()`` works as written.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import doctest
import io
import json
import os
import re
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from asyncbatch._cli import run
from asyncbatch._cli.args import parse
from asyncbatch.testing import Simulator

FENCE = re.compile(r"^```(\S*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
DIRECTIVE = re.compile(r"<!-- docs: ([\w-]+)(?::\s*(.*?))? -->\s*$")
SESSION_KEY = "docs-key"
WEBHOOK_SECRET = "docs-webhook-secret"


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text, line number and the directive before it."""

    language: str
    code: str
    line: int
    directive: str | None
    reason: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = DIRECTIVE.search(before)
        found.append(
            Block(
                language=match.group(1),
                code=match.group(2),
                line=text.count("\n", 0, match.start()) + 1,
                directive=directive.group(1) if directive else None,
                reason=directive.group(2) if directive else None,
            )
        )
    return found


def matches(expected: str, got: str) -> bool:
    """doctest's comparison with ``...`` for anything and whitespace runs made equal."""
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return doctest.OutputChecker().check_output(expected, got, flags)


class Session:
    """The shared state of one file's blocks: namespace, environment, last exit status."""

    def __init__(self, sim: Simulator, workdir: Path) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.env = {
            "TWELVELABS_API_KEY": SESSION_KEY,
            "TWELVELABS_BASE_URL": sim.base_url,
            "TWELVELABS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        self.workdir = workdir
        self.status = 0
        self.printed = ""
        self.served: dict[str, str] = {}

    async def python(self, block: Block) -> None:
        out = io.StringIO()
        program = 'if __name__ == "__main__":' in block.code
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        code = compile(block.code, f"<docs line {block.line}>", "exec", flags=flags)
        with contextlib.redirect_stdout(out), _environ(self.env), contextlib.chdir(self.workdir):
            result = eval(code, self.namespace)  # noqa: S307 - the docs' own examples
            if result is not None:
                await result
            if program:
                await self._main(block)
        self.printed = out.getvalue()

    async def _main(self, block: Block) -> None:
        """Await the program's ``main()``; a service (``stop-after: S``) is stopped after S s."""
        if block.directive != "stop-after":
            await self.namespace["main"]()
            return
        with anyio.move_on_after(float(block.reason or 0)):
            await self.namespace["main"]()

    async def console(self, block: Block) -> list[tuple[str, str, str]]:
        """Run each command; returns (command, expected, got) for every one."""
        checks = []
        command, expected = None, []
        sim_stack = contextlib.AsyncExitStack()
        async with sim_stack:
            for line in [*block.code.splitlines(), "$ "]:
                if not line.startswith("$ "):
                    expected.append(line)
                    continue
                if command is not None:
                    got = await self._command(command, sim_stack)
                    checks.append((command, "\n".join(expected) + "\n", got))
                command, expected = line[2:].strip(), []
        return checks

    async def _command(self, command: str, stack: contextlib.AsyncExitStack) -> str:
        words = shlex.split(command, comments=True)
        if words[:1] == ["export"]:
            for word in words[1:]:
                name, _, value = word.partition("=")
                self.env[name] = self.served.get(value, value)
            return ""
        if words == ["echo", "$?"]:
            return f"{self.status}\n"
        if len(words) == 3 and words[0] == "head" and words[1].startswith("-"):
            lines = (self.workdir / words[2]).read_text().splitlines(keepends=True)
            return "".join(lines[: int(words[1][1:])])
        if words[:2] == ["asyncbatch", "simulate"] and words[-1] == "&":
            args = parse(words[1:-1], io.StringIO(), io.StringIO())
            sim = await stack.enter_async_context(_simulator(args))
            # The docs name the port they asked for; this one listens on a free port.
            self.served[f"http://{args.host}:{args.port}/v1.3"] = sim.base_url
            return ""
        if words[:1] == ["asyncbatch"]:
            return await self._asyncbatch(words[1:])
        raise AssertionError(f"the docs runner cannot run {command!r}: mark its block skip")

    async def _asyncbatch(self, words: list[str]) -> str:
        pipe: list[str] = []
        if "|" in words:
            at = words.index("|")
            pipe, words = words[at + 1 :], words[:at]
            if pipe[:1] not in (["head"], ["tail"]) and pipe != ["cat"]:
                raise AssertionError(f"the docs runner cannot pipe into {pipe}")
        out = io.StringIO()
        with contextlib.chdir(self.workdir):
            self.status = await run(words, out, out, stdin=io.StringIO(), env=self.env)
        text = out.getvalue()
        if pipe:
            self.status = 0  # a pipeline's status is its last command's
        if pipe[:1] in (["head"], ["tail"]):
            lines = text.splitlines(keepends=True)
            count = int(pipe[1][1:])
            text = "".join(lines[:count] if pipe[0] == "head" else lines[-count:])
        return text


@contextlib.asynccontextmanager
async def _simulator(args: argparse.Namespace) -> AsyncIterator[Simulator]:
    async with Simulator(
        api_key=args.api_key,
        seed=args.seed,
        item_seconds=args.item_seconds,
        item_failure_rate=args.item_failure_rate,
    ) as sim:
        yield sim


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Any:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_json(block: Block) -> None:
    """A ``json`` block is one JSON document or JSON Lines."""
    for line in block.code.splitlines() if "\n{" in block.code else [block.code]:
        json.loads(line)
