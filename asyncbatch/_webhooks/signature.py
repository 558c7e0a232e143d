"""``TL-Signature``: signing and verifying webhook deliveries (reference §3).

The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256>``; the MAC is keyed by
the endpoint's secret and covers ``t + "." + raw body``, the raw bytes exactly
as received. We accept more than the one documented form, because a verifier
that rejects a genuine delivery costs a retry storm while one that tolerates
layout costs nothing: spaces around parts and ``=``, parts in any order, empty
parts, unknown schemes (``v0=``, a future ``v2=``) ignored, and several ``v1=``
values, any one of which may match (secret rotation). Several secrets may be
given for the same reason.

What we never relax: the MAC is compared in constant time; the timestamp must
lie within ``tolerance`` seconds of now either way (a captured delivery cannot
be replayed later, nor a forged clock used to pre-sign); the body is not read
until the MAC holds. No message here contains a secret or the expected MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Final

from .._errors import WebhookVerificationError
from .._transport import MAX_BODY_BYTES
from .event import WebhookEvent, decode_event

SIGNATURE_HEADER: Final = "TL-Signature"
DEFAULT_TOLERANCE: Final = 300.0
"""Seconds a delivery's timestamp may differ from now; the docs suggest 5 minutes."""

Secret = str | bytes
Secrets = Secret | Sequence[Secret]
"""One webhook secret, or several (any one may have signed the delivery)."""

_MAX_TIMESTAMP_DIGITS: Final = 15


def sign(body: bytes, secret: Secret, *, timestamp: int) -> str:
    """The ``TL-Signature`` value TwelveLabs would send for ``body`` at ``timestamp``.

    For tests, the simulator and your own test deliveries.
    """
    if timestamp < 0:
        raise ValueError("timestamp must be a non-negative number of Unix seconds")
    stamp = str(int(timestamp))
    return f"t={stamp},v1={_mac(secret_keys(secret)[0], stamp, body).hex()}"


def verify_signature(
    body: bytes,
    signature: str | None,
    secret: Secrets,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a delivery's ``TL-Signature``; return its timestamp (Unix seconds).

    Raises `WebhookVerificationError` when the header is missing or
    malformed, the body is over `MAX_BODY_BYTES` (16 MiB), no ``v1``
    matches any secret, or the timestamp is more than
    ``tolerance`` seconds from ``now`` (default: the system clock) either way.
    """
    keys = secret_keys(secret)
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    stamp, candidates = parse_signature_header(signature)
    if len(body) > MAX_BODY_BYTES:  # refused before hashing it, as the API client does
        raise WebhookVerificationError(f"the webhook body is over the {MAX_BODY_BYTES} byte limit")
    expected = [_mac(key, stamp, body) for key in keys]
    if not any(_matches(candidate, expected) for candidate in candidates):
        raise WebhookVerificationError("the webhook signature does not match")
    timestamp = int(stamp)
    skew = (time.time() if now is None else now) - timestamp
    if skew > tolerance:
        raise WebhookVerificationError(
            f"the webhook timestamp is {skew:.0f} s old; the tolerance is {tolerance:g} s"
        )
    if -skew > tolerance:
        raise WebhookVerificationError(
            f"the webhook timestamp is {-skew:.0f} s in the future; "
            f"the tolerance is {tolerance:g} s"
        )
    return timestamp


def verify(
    body: bytes,
    signature: str | None,
    secret: Secrets,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """Verify a delivery, then decode it.

    ``body`` is the raw request body, ``signature`` the ``TL-Signature``
    header's value (None when absent). The body is decoded only once the
    signature and timestamp hold. Raises `WebhookVerificationError` for a
    delivery that does not verify, and its subclass `WebhookPayloadError` for
    a verified body that is not a webhook event.
    """
    verify_signature(body, signature, secret, tolerance=tolerance, now=now)
    return decode_event(body)


def parse_signature_header(header: str | None) -> tuple[str, list[str]]:
    """Split a ``TL-Signature`` value into its timestamp text and its ``v1`` values.

    The timestamp is returned as sent, because the MAC covers that text.
    Raises `WebhookVerificationError` when the header is missing, has no
    (or conflicting) ``t``, a ``t`` that is not a whole number, or no ``v1``.
    """
    if not header or not header.strip():
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is missing")
    stamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, equals, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not key and not value:
            continue  # an empty part, e.g. a trailing comma
        if not equals:
            raise _malformed("a part without '='")
        if key == "t":
            if stamp is not None and stamp != value:
                raise _malformed("two different timestamps")
            stamp = value
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        raise _malformed("no t= timestamp" if stamp is None else "no v1= signature")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
        raise _malformed("a timestamp that is not whole Unix seconds")
    return stamp, candidates


def _malformed(what: str) -> WebhookVerificationError:
    return WebhookVerificationError(f"the {SIGNATURE_HEADER} header is malformed: {what}")


def secret_keys(secret: Secrets) -> list[bytes]:
    """The secrets as HMAC keys; `ValueError` (naming no secret) when one is empty."""
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    keys = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
    if not keys or not all(keys):
        raise ValueError("a webhook secret must not be empty")
    return keys


def _mac(key: bytes, stamp: str, body: bytes) -> bytes:
    return hmac.new(key, stamp.encode("ascii") + b"." + body, hashlib.sha256).digest()


def _matches(candidate: str, expected: list[bytes]) -> bool:
    try:
        given = bytes.fromhex(candidate)
    except ValueError:
        return False  # not hex: cannot be a valid signature, and says nothing secret
    # compare_digest on every key, without stopping early, so timing reveals nothing.
    return sum(hmac.compare_digest(given, mac) for mac in expected) > 0
