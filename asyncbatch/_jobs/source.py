"""Reading a job's requests, one at a time, from a JSON Lines file, an iterable or an
async iterable: each becomes a stored row ``(line, custom_id, request)`` or a problem.

A request is checked as `BatchItemRequest` checks it (a misspelt key, a bad custom ID or
a missing video is a problem naming its line); the caller's ``custom_id`` is kept aside,
since the job sends its own (see `Job`). Blank lines of a file are skipped but counted, so
``line`` is always the line number in the file.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from .._models import BatchItemRequest
from .ledger import Row

RequestLike = BatchItemRequest | Mapping[str, Any]
Requests = Iterable[RequestLike] | AsyncIterable[RequestLike] | str | os.PathLike[str]
"""What a job reads: requests (structs or dicts), sync or async, or a JSON Lines file's path."""

_encoder = msgspec.json.Encoder()
_BOM = "\ufeff"


async def rows(source: Requests) -> AsyncIterator[Row | str]:
    """Every request of ``source`` as a row, or a problem naming its line."""
    if isinstance(source, str | os.PathLike):
        async for row in _file_rows(Path(source)):
            yield row
        return
    line = 0
    if isinstance(source, AsyncIterable):
        async for request in source:
            line += 1
            yield to_row(line, request)
    else:
        for request in source:
            line += 1
            yield to_row(line, request)
            if line % 500 == 0:
                await anyio.lowlevel.checkpoint()  # a long list must not hog the loop


async def _file_rows(path: Path) -> AsyncIterator[Row | str]:
    try:
        file = path.open("rb")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    with file:
        for line, text in enumerate(file, start=1):
            # Editors on Windows start UTF-8 files with a byte order mark; it is not JSON.
            raw = text.removeprefix(_BOM.encode()) if line == 1 else text
            if not raw.strip():
                continue
            try:
                value = msgspec.json.decode(raw)
            except Exception as exc:  # any decoder failure, RecursionError too
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                yield f"line {line}: not valid JSON ({reason})"
                continue
            yield to_row(line, value)
            if line % 500 == 0:
                await anyio.lowlevel.checkpoint()


def to_row(line: int, request: object) -> Row | str:
    """One request as a stored row, or the problem with it."""
    raw = msgspec.to_builtins(request) if isinstance(request, msgspec.Struct) else request
    if not isinstance(raw, Mapping):
        return f"line {line}: a request is a JSON object, got {type(raw).__name__}"
    try:
        checked = msgspec.convert(dict(raw), BatchItemRequest)
    except msgspec.ValidationError as exc:
        return f"line {line}: {exc}"
    try:
        body = _encoder.encode(msgspec.structs.replace(checked, custom_id=None))
    except (TypeError, msgspec.EncodeError) as exc:
        return f"line {line}: {exc}"
    return (line, checked.custom_id, body)
