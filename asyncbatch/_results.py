"""`ResultStream`: a batch's JSON Lines results, decoded one line at a time.

The official SDK wraps each line's parse in ``except Exception: pass``, so a bad
line vanishes. Here a bad line raises `DecodeError` with its line number and a
snippet, and the stream stays open: a caller who wants to log it and go on calls
``anext()`` again and gets the next line.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Self

import anyio
import msgspec
from anyio.abc import AsyncResource

from ._errors import DecodeError
from ._models import ResultItem, decode_body
from ._transport import MAX_LINE_BYTES

if TYPE_CHECKING:
    from ._retry import RetryPolicy
    from ._transport import Line, Transport


class ResultStream(AsyncResource):
    """An async iterator of `ResultItem` that is also an async context manager.

    The response opens on the first ``anext()`` (or on ``async with``) and is
    released when the lines run out, when the transport fails, or when the
    ``async with`` exits. ``timeout`` (seconds, from that opening to the last
    line) bounds the whole download; `APITimeoutError` when it runs out.
    """

    def __init__(
        self,
        transport: Transport,
        path: str,
        decoder: msgspec.json.Decoder[ResultItem],
        *,
        retry: RetryPolicy | None,
        timeout: float | None = None,
    ) -> None:
        self._transport = transport
        self._path = path
        self._decoder = decoder
        self._retry = retry
        self._timeout = timeout
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._lines: AsyncIterator[Line] | None = None
        self._done = False

    def __repr__(self) -> str:
        return f"<asyncbatch.ResultStream GET {self._path}>"

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ResultItem:
        lines = await self._open()
        try:
            number, line, oversized = await anext(lines)
        except BaseException:  # StopAsyncIteration, transport errors, cancellation alike
            await self.aclose()
            raise
        if oversized:
            raise DecodeError(
                f"GET {self._path}: results line is over the {MAX_LINE_BYTES} byte limit",
                snippet=line,
                line_number=number,
            )
        return decode_body(
            self._decoder,
            line,
            f"GET {self._path}: results line is not a valid item",
            line_number=number,
        )

    async def aclose(self) -> None:
        """Release the response. Idempotent; iteration then ends."""
        self._done = True
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.aclose()

    async def _open(self) -> AsyncIterator[Line]:
        if self._done:
            raise StopAsyncIteration
        if self._lines is None:
            stack = contextlib.AsyncExitStack()
            deadline = None if self._timeout is None else anyio.current_time() + self._timeout
            self._lines = await stack.enter_async_context(
                self._transport.stream_lines(self._path, retry=self._retry, deadline=deadline)
            )
            self._exit_stack = stack
        return self._lines
