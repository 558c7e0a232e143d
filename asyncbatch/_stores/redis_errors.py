"""What every Redis-backed piece shares: the default key prefix, Redis failures raised as
`StateStoreError`, and awaiting redis-py's commands. Imported only where the ``redis``
extra is in use."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .._errors import StateStoreError

DEFAULT_PREFIX: Final = "asyncbatch:"
"""The start of every key asyncbatch writes to Redis unless told otherwise."""


def client_from_url(url: str) -> tuple[Redis, str]:
    """A client for ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``, with any option
    redis-py reads from a URL), and the key prefix its ``?prefix=`` gives (else the default).
    Nothing connects yet."""
    parts = urlsplit(url)
    options = parse_qs(parts.query)
    prefix = options.pop("prefix", [DEFAULT_PREFIX])[-1]
    rest = urlencode({k: v[-1] for k, v in options.items()})
    return Redis.from_url(parts._replace(query=rest).geturl()), prefix


_P = ParamSpec("_P")
_R = TypeVar("_R")


def redis_errors(
    method: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Raise Redis failures as `StateStoreError` (the cause chained), like every store."""

    @functools.wraps(method)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            raise StateStoreError(f"Redis: {exc}") from exc

    return call


async def awaited(result: Awaitable[Any] | Any) -> Any:
    """redis-py types its async commands as ``Awaitable[T] | T``: await the awaitable."""
    return await result
