"""`open_ledger`: the job `Ledger` a ``--state`` URL names.

* ``memory://``: SQLite in this process only (nothing survives it);
* ``sqlite:///relative.db`` or ``sqlite:////absolute.db``, optionally
  ``?synchronous=NORMAL``: a `SQLiteLedger`;
* ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``, with any option redis-py reads
  from a URL), optionally ``?prefix=KEYPREFIX``: a `RedisLedger` (the ``redis`` extra).
  One job per prefix: a second job needs a prefix of its own.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .._redact import redact_url
from .._stores.sqlite import sqlite_url_parts
from .ledger import Ledger
from .sqlite_ledger import SQLiteLedger

_FORMS = "memory://, sqlite:///PATH or redis://HOST:PORT/DB"


async def open_ledger(url: str) -> Ledger:
    """The ledger ``url`` names (see the module documentation); `ValueError` if malformed,
    `StateStoreError` if it cannot be opened."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return SQLiteLedger(":memory:")
    if scheme == "sqlite":
        return _sqlite(parts.netloc, parts.path, parse_qs(parts.query))
    if scheme in ("redis", "rediss", "unix"):
        return await _redis(url)
    raise ValueError(f"a job keeps its state in {_FORMS}, not {redact_url(url)!r}")


def _sqlite(netloc: str, path: str, query: dict[str, list[str]]) -> SQLiteLedger:
    file, synchronous = sqlite_url_parts(netloc, path, query)
    return SQLiteLedger(file, synchronous=synchronous)


async def _redis(url: str) -> Ledger:
    try:
        from .._stores.redis_errors import client_from_url  # noqa: PLC0415 - the redis extra
        from .redis_ledger import RedisLedger  # noqa: PLC0415
    except ImportError as exc:
        raise ValueError(
            "a redis:// state needs the redis extra: pip install 'asyncbatch[redis]'"
        ) from exc
    client, prefix = client_from_url(url)
    return await RedisLedger.open(client, prefix=prefix, owns_client=True)
