"""What every Redis-backed piece shares: the default key prefix, Redis failures raised as
`StateStoreError`, and awaiting redis-py's commands. Imported only where the ``redis``
extra is in use."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, ParamSpec, TypeVar

from redis.exceptions import RedisError

from .._errors import StateStoreError

DEFAULT_PREFIX: Final = "asyncbatch:"
"""The start of every key asyncbatch writes to Redis unless told otherwise."""

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
