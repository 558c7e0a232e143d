"""The exceptions asyncbatch raises.

Everything the API or the network does to a call arrives under one root::

    AsyncBatchError
    ├── APIStatusError            the server answered with an error status
    │   ├── BadRequestError       400
    │   ├── AuthenticationError   401
    │   ├── PermissionDeniedError 403
    │   ├── NotFoundError         404  (wrong ID, deleted, or older than 30 days)
    │   ├── EndpointNotFoundError 404  without the API's error body: a wrong base URL
    │   ├── ConflictError         409  (``code`` names the state: batch_not_terminal, ...)
    │   ├── RateLimitError        429  (``retry_after``: seconds the server asks us to wait)
    │   └── ServerError           5xx
    ├── APIConnectionError        no usable answer: refused, reset, dropped mid-body
    │   └── APITimeoutError       a request or a call's deadline ran out (also a TimeoutError)
    ├── DecodeError               the body broke the schema (``snippet``, ``line_number``)
    ├── WaitTimeoutError          ``batches.wait()`` ran out of time (also a TimeoutError)
    ├── StateStoreError           a state store (SQLite, Redis) failed; the cause is chained
    └── WebhookVerificationError  a webhook delivery failed verification
        └── WebhookPayloadError   (asyncbatch.webhooks) signed, but not a webhook event

Programmer mistakes are not API failures and stay outside the root, so that an
``except AsyncBatchError`` retry loop never swallows them:

* `InvalidBatchIdError` (a `ValueError`): an ID that is not 24 hex digits;
* `InvalidRequestError` (a `ValueError`): a create request that breaks the
  API's rules (shape, 1-1,000 requests, custom_id format or uniqueness);
* `ConfigurationError` (a `ValueError`): no API key, or plain ``http://`` to a
  remote host without opting in;
* `ClientClosedError` (a `RuntimeError`): a call on a closed client.

No message or attribute here ever holds the API key: requests are described by
method and URL only.
"""

from __future__ import annotations

from collections.abc import Mapping


class AsyncBatchError(Exception):
    """Root of every error the API or the network causes."""


class APIStatusError(AsyncBatchError):
    """The server answered with an error status.

    Attributes: ``status`` (HTTP status), ``code`` and ``message`` (from the
    error body, nested or flat, when it had them), ``headers`` (the response
    headers), ``method`` and ``url`` (the request, never its headers).
    """

    def __init__(
        self,
        *,
        status: int,
        code: str | None,
        message: str | None,
        headers: Mapping[str, str],
        method: str,
        url: str,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers)
        self.method = method
        self.url = url
        super().__init__(self._describe())

    def _describe(self) -> str:
        detail = f": {self.code}" if self.code else ""
        text = f" ({self.message})" if self.message else ""
        return f"{self.method} {self.url} answered {self.status}{detail}{text}"


class BadRequestError(APIStatusError):
    """400: the request was malformed or broke a rule of the API."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, invalid or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: no such batch (wrong ID, deleted, or past its 30 days)."""


class EndpointNotFoundError(APIStatusError):
    """404 with a body that is not the API's own error: the path, not the batch, is unknown.

    A base URL without ``/v1.3`` (or pointing at another service) answers this to
    every request. It says nothing about the batch, so the watcher never reports
    it as ``gone``.
    """

    def _describe(self) -> str:
        return (
            f"{super()._describe()}; this is not the API's own answer: "
            "check the base URL (it ends in /v1.3)"
        )


class ConflictError(APIStatusError):
    """409: the batch is in the wrong state for this call; ``code`` names the state."""


class RateLimitError(APIStatusError):
    """429: too many requests, or too many active batches.

    ``retry_after`` is the wait in seconds the server asked for, or None when it
    named none.
    """

    def __init__(
        self,
        *,
        status: int,
        code: str | None,
        message: str | None,
        headers: Mapping[str, str],
        method: str,
        url: str,
        retry_after: float | None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            status=status, code=code, message=message, headers=headers, method=method, url=url
        )

    def _describe(self) -> str:
        wait = f"; retry after {self.retry_after:g} s" if self.retry_after is not None else ""
        return super()._describe() + wait


class ServerError(APIStatusError):
    """5xx: the server failed; retried before it reaches you."""


class APIConnectionError(AsyncBatchError):
    """The request got no usable answer: refused, reset, or cut off mid-body."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """A request, or a call's overall deadline, ran out of time."""


class DecodeError(AsyncBatchError):
    """A response body broke the schema.

    ``snippet`` holds the start of the offending body (or line) and
    ``line_number`` the 1-based line for results streams, else None.
    """

    def __init__(self, message: str, *, snippet: bytes, line_number: int | None = None) -> None:
        self.snippet = snippet
        self.line_number = line_number
        where = f" at line {line_number}" if line_number is not None else ""
        super().__init__(f"{message}{where}: {snippet!r}")


class WaitTimeoutError(AsyncBatchError, TimeoutError):
    """``batches.wait()`` ran out of time before the batch ended."""


class StateStoreError(AsyncBatchError):
    """A state store, gate or lease backend (SQLite, Redis) failed; ``__cause__`` says how."""


class WebhookVerificationError(AsyncBatchError):
    """A webhook delivery's signature, timestamp or body did not verify."""


class InvalidBatchIdError(ValueError):
    """A batch ID that is not 24 hexadecimal digits; raised before any request."""


class InvalidRequestError(ValueError):
    """A create request that breaks the API's rules; raised before any request."""


class ConfigurationError(ValueError):
    """The client was set up wrongly (no API key, an unsafe base URL)."""


class ClientClosedError(RuntimeError):
    """The client was used after ``aclose()``."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The most specific `APIStatusError` subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    return _STATUS_ERRORS.get(status, APIStatusError)
