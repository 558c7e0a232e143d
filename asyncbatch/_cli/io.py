"""Where the command line writes, and how it fails: `Streams` and `CommandError`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

from .._redact import scrub_secrets
from .render import terminal_text

PROG = "asyncbatch"


class CommandError(Exception):
    """An expected failure: print one line on stderr and exit with ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Streams:
    """The command's standard streams, and the secrets no line may show."""

    stdout: TextIO
    stderr: TextIO
    stdin: TextIO
    secrets: list[str] = field(default_factory=list)

    def out(self, line: str) -> None:
        """A line of the command's output, flushed (pipes see it at once)."""
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def note(self, line: str) -> None:
        """A line for the person at the terminal, on stderr; secrets scrubbed, controls escaped."""
        self.stderr.write(terminal_text(self.scrub(line), keep_newlines=True) + "\n")
        self.stderr.flush()

    def warn(self, message: str) -> None:
        """``asyncbatch: warning: ...`` on stderr."""
        self.note(f"{PROG}: warning: {message}")

    def error(self, message: str) -> None:
        """``asyncbatch: error: ...`` on stderr, on one line."""
        self.note(f"{PROG}: error: {' '.join(message.split())}")

    def scrub(self, text: str) -> str:
        """``text`` with every secret (as a whole token) and URL password replaced by ``***``."""
        return scrub_secrets(text, self.secrets)


SECRET_FLAGS = ("--api-key", "--secret", "--webhook-secret")
"""Options whose values are secrets: the API key and webhook secrets."""


URL_FLAGS = ("--state",)
"""Options whose values are URLs that may carry a password (``redis://:PASSWORD@host``)."""


def argv_secrets(argv: Iterable[str]) -> list[str]:
    """The values of every `SECRET_FLAGS` option in ``argv``, even where argparse rejects them,
    and the passwords in the URLs of `URL_FLAGS` options."""
    found: list[str] = []
    args = list(argv)
    for index, arg in enumerate(args):
        for flag in (*SECRET_FLAGS, *URL_FLAGS):
            value = None
            if arg == flag and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith(flag + "="):
                value = arg.removeprefix(flag + "=")
            if value is not None and flag in URL_FLAGS:
                value = _password(value)
            if value:
                found.append(value)
    return found


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # a malformed URL: the parser reports it, and it has no password
        return None
