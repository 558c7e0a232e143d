"""`open_store`: a state store (and, for Redis, replica coordination) named by one URL.

The command line's ``--state`` takes one of:

* ``memory://``: a `MemoryStore` (nothing survives the process; for trying things out);
* ``sqlite:///state.db`` (relative) or ``sqlite:////var/lib/app/state.db``
  (absolute), optionally ``?synchronous=NORMAL``: a `SQLiteStore`;
* ``redis://HOST:PORT/DB`` (or ``rediss://``, with any option redis-py reads from
  a URL), optionally ``?prefix=KEYPREFIX``: a `RedisStore`, plus `RedisGate`
  and `RedisLeases` factories on the same client, for replicas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from anyio.abc import AsyncResource

from .._coordination import Leases, RequestGate
from .._redact import redact_url
from .memory import MemoryStore, StateStore
from .sqlite import SQLiteStore, sqlite_url_parts

if TYPE_CHECKING:
    from redis.asyncio import Redis

GateFactory = Callable[[float | None, float | None], RequestGate]
"""``(requests_per_second, burst)`` to a gate shared by every replica."""
LeasesFactory = Callable[[str | None, float], Leases]
"""``(owner or None, lease_seconds)`` to this replica's leases."""

_FORMS = "memory://, sqlite:///PATH or redis://HOST:PORT/DB"


@dataclass
class OpenedStore(AsyncResource):
    """What a ``--state`` URL opened. ``gate`` and ``leases`` are None unless it is shared (Redis).

    Close it (``async with`` or `aclose`) to release the store and its connection.
    """

    store: StateStore
    gate: GateFactory | None = None
    leases: LeasesFactory | None = None
    _client: Redis | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        """Close the store, then the Redis client if one was made."""
        try:
            await self.store.aclose()
        finally:
            if self._client is not None:
                await self._client.aclose()


def open_store(url: str) -> OpenedStore:
    """The store named by ``url`` (see the module documentation); `ValueError` if malformed.

    Nothing connects yet: a SQLite file is opened, and a Redis server
    reached, on first use.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return OpenedStore(MemoryStore())
    if scheme == "sqlite":
        return _sqlite(parts.netloc, parts.path, parse_qs(parts.query))
    if scheme in ("redis", "rediss", "unix"):
        return _redis(url)
    raise ValueError(f"unsupported state URL {redact_url(url)!r}: use {_FORMS}")


def _sqlite(netloc: str, path: str, query: dict[str, list[str]]) -> OpenedStore:
    file, synchronous = sqlite_url_parts(netloc, path, query)
    return OpenedStore(SQLiteStore(file, synchronous=synchronous))


def _redis(url: str) -> OpenedStore:
    try:
        from ..redis import RedisGate, RedisLeases, RedisStore  # noqa: PLC0415 - redis extra
        from .redis_errors import client_from_url  # noqa: PLC0415
    except ImportError as exc:
        raise ValueError(
            "a redis:// state needs the redis extra: pip install 'asyncbatch[redis]'"
        ) from exc
    client, prefix = client_from_url(url)

    def gate(rate: float | None, burst: float | None) -> RequestGate:
        return RedisGate(client, rate, burst, prefix=prefix)

    def leases(owner: str | None, lease_seconds: float) -> Leases:
        return RedisLeases(client, owner, lease_seconds, prefix=prefix)

    return OpenedStore(RedisStore(client, prefix=prefix), gate, leases, client)
