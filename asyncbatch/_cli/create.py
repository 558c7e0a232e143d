"""Reading ``asyncbatch create``'s input: requests as JSON Lines, a JSON array, or a create body.

`load_create_body` always returns a create body: a dict with ``requests``
(a list of objects) and whichever of ``defaults``, ``model_name`` and
``analysis_mode`` the input named. A file that is none of the accepted shapes
is a usage error naming the line or the problem.
"""

from __future__ import annotations

from typing import Any, TextIO

import msgspec

from .exits import EXIT_USAGE
from .io import CommandError

_BODY_KEYS = ("defaults", "model_name", "analysis_mode")
_BOM = "\ufeff"


def load_create_body(path: str, stdin: TextIO | None) -> dict[str, Any]:
    """Read ``path`` (or ``stdin`` when given, for ``-``) into a create body."""
    name = "standard input" if stdin is not None else path
    try:
        if stdin is not None:
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CommandError(f"{name} is not UTF-8 text", EXIT_USAGE) from None
    # Editors on Windows start UTF-8 files with a byte order mark; it is not JSON.
    return parse_create_input(text.removeprefix(_BOM), name)


def parse_create_input(text: str, name: str) -> dict[str, Any]:
    """Parse the text of a requests file; ``name`` appears in error messages."""
    if not text.strip():
        raise CommandError(f"{name} holds no requests", EXIT_USAGE)
    try:
        whole = msgspec.json.decode(text)
    except Exception:  # any decoder failure (RecursionError too): try it as JSON Lines
        requests = _json_lines(text, name)  # not one JSON document: JSON Lines, then
    else:
        if isinstance(whole, dict) and "requests" in whole:
            return _body(whole, name)
        requests = whole if isinstance(whole, list) else [whole]
    return {"requests": _checked(requests, name)}


def _json_lines(text: str, name: str) -> list[Any]:
    requests = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            requests.append(msgspec.json.decode(line))
        except Exception as exc:  # any decoder failure, RecursionError from deep nesting too
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise CommandError(
                f"{name} line {number} is not valid JSON ({reason})", EXIT_USAGE
            ) from None
    return requests


def _body(whole: dict[str, Any], name: str) -> dict[str, Any]:
    body = {"requests": _checked(whole["requests"], name)}
    for key in _BODY_KEYS:
        if whole.get(key) is not None:
            body[key] = whole[key]
    if "defaults" in body and not isinstance(body["defaults"], dict):
        raise CommandError(f'{name}: "defaults" must be a JSON object', EXIT_USAGE)
    return body


def _checked(requests: object, name: str) -> list[Any]:
    if not isinstance(requests, list) or not requests:
        raise CommandError(f'{name}: "requests" must be a non-empty list of objects', EXIT_USAGE)
    for index, request in enumerate(requests, start=1):
        if not isinstance(request, dict):
            raise CommandError(f"{name}: request {index} is not a JSON object", EXIT_USAGE)
    return requests
