"""TL-Signature: known vectors, tampering, replay windows, header layouts, secrecy."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncbatch import WebhookVerificationError
from asyncbatch.webhooks import (
    WebhookPayloadError,
    parse_signature_header,
    sign,
    verify,
    verify_signature,
)

SECRET = "whsec-test-0123456789-SECRET"
T = 1784544000
BODY = (
    b'{"id":"whe_0123456789abcdef0123456789abcdef","created_at":"2026-07-20T10:40:00Z",'
    b'"type":"analyze.task.ready","data":{"id":"68f4ddaf8aaa60d33df0e900",'
    b'"custom_id":"summary-001","status":"ready"}}'
)


def mac(body: bytes, secret: str, stamp: str) -> str:
    """The MAC as the reference spells it out: HMAC-SHA256(secret, t + "." + body), hex."""
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_sign_matches_an_independently_computed_vector() -> None:
    """`sign` gives the value `openssl dgst -sha256 -hmac s3cret` gives for the same payload."""
    body = (
        b'{"id":"whe_1","created_at":"2026-07-20T10:40:00Z","type":"analyze.task.ready",'
        b'"data":{"id":"68f4ddaf8aaa60d33df0e900","custom_id":"summary-001","status":"ready"}}'
    )
    assert sign(body, "s3cret", timestamp=T) == (
        "t=1784544000,v1=affe4be2f8cff4a8075f306bc3aa17fe7f9ef45e3d67996bd23c342b4a8cc82f"
    )


def test_a_valid_delivery_verifies_and_decodes() -> None:
    """A correctly signed body within the window decodes to its event."""
    event = verify(BODY, f"t={T},v1={mac(BODY, SECRET, str(T))}", SECRET, now=T + 10)
    assert event.id == "whe_0123456789abcdef0123456789abcdef"
    assert event.type == "analyze.task.ready"
    assert event.created_at.utcoffset() is not None
    assert event.data["custom_id"] == "summary-001"


def test_bytes_secret_equals_text_secret() -> None:
    """A secret given as bytes verifies the same deliveries as its text form."""
    assert verify_signature(BODY, sign(BODY, SECRET, timestamp=T), SECRET.encode(), now=T) == T


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: b.replace(b"ready", b"faile", 1), id="body-changed"),
        pytest.param(lambda b: b + b" ", id="body-extended"),
        pytest.param(lambda b: b[:-1], id="body-truncated"),
        pytest.param(lambda b: b.replace(b'","', b'", "', 1), id="body-reserialised"),
    ],
)
def test_a_tampered_body_is_rejected(tamper: Callable[[bytes], bytes]) -> None:
    """Any change to the raw bytes, even one that keeps the JSON equal, breaks the signature."""
    header = sign(BODY, SECRET, timestamp=T)
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(tamper(BODY), header, SECRET, now=T)


def test_a_tampered_timestamp_is_rejected() -> None:
    """Moving ``t`` (to dodge the replay window) breaks the MAC, which covers it."""
    good = mac(BODY, SECRET, str(T))
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(BODY, f"t={T + 1000},v1={good}", SECRET, now=T + 1000)


def test_a_tampered_signature_is_rejected() -> None:
    """One flipped hex digit of ``v1`` fails."""
    good = mac(BODY, SECRET, str(T))
    flipped = ("0" if good[0] != "0" else "1") + good[1:]
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(BODY, f"t={T},v1={flipped}", SECRET, now=T)


def test_the_wrong_secret_is_rejected() -> None:
    """A delivery signed with another secret fails."""
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(BODY, sign(BODY, "another-secret", timestamp=T), SECRET, now=T)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86_400, False)],
)
def test_the_timestamp_must_be_within_the_tolerance_either_way(offset: int, accepted: bool) -> None:
    """``now - t`` beyond 300 s (too old) or below -300 s (from the future) is refused."""
    header = sign(BODY, SECRET, timestamp=T)
    if accepted:
        assert verify_signature(BODY, header, SECRET, now=T + offset) == T
        return
    word = "old" if offset > 0 else "future"
    with pytest.raises(WebhookVerificationError, match=word):
        verify_signature(BODY, header, SECRET, now=T + offset)


def test_the_tolerance_is_configurable() -> None:
    """A narrower window refuses what the default accepts."""
    header = sign(BODY, SECRET, timestamp=T)
    assert verify_signature(BODY, header, SECRET, now=T + 60) == T
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_signature(BODY, header, SECRET, now=T + 60, tolerance=30)


def test_a_forged_signature_with_an_old_timestamp_reports_the_mismatch() -> None:
    """The MAC is checked before the clock, so a forgery is never mistaken for a late retry."""
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify(BODY, f"t={T},v1={'0' * 64}", SECRET, now=T + 10_000)


def test_any_one_of_several_v1_values_may_match() -> None:
    """During secret rotation the header carries several ``v1=``; one match is enough."""
    old, new = mac(BODY, "old-secret", str(T)), mac(BODY, SECRET, str(T))
    for header in (f"t={T},v1={old},v1={new}", f"t={T},v1={new},v1={old}"):
        assert verify_signature(BODY, header, SECRET, now=T) == T
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_signature(BODY, f"t={T},v1={old},v1={old}", SECRET, now=T)


def test_several_secrets_may_be_tried() -> None:
    """A verifier holding the old and the new secret accepts deliveries signed by either."""
    secrets = ["old-secret", SECRET]
    for signer in secrets:
        assert verify_signature(BODY, sign(BODY, signer, timestamp=T), secrets, now=T) == T
    with pytest.raises(WebhookVerificationError):
        verify_signature(BODY, sign(BODY, "third", timestamp=T), secrets, now=T)


@pytest.mark.parametrize(
    "layout",
    [
        "t={t},v1={v}",
        "v1={v},t={t}",
        "t={t}, v1={v}",
        " t = {t} ,  v1 = {v} ",
        "t={t},v1={V}",
        "t={t},v0=abcdef,v1={v}",
        "t={t},v1=not-hex,v1={v}",
        "t={t},v1={v},",
        "t={t},t={t},v1={v}",
    ],
    ids=[
        "documented", "reordered", "space-after-comma", "spaces-everywhere", "uppercase-hex",
        "unknown-scheme", "junk-v1-beside-good", "trailing-comma", "repeated-equal-t",
    ],
)  # fmt: skip
def test_header_layout_variants_are_tolerated(layout: str) -> None:
    """Spacing, order, case of the hex, extra schemes and empty parts do not matter."""
    good = mac(BODY, SECRET, str(T))
    header = layout.format(t=T, v=good, V=good.upper())
    assert verify_signature(BODY, header, SECRET, now=T) == T


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("v1=abcd", "no t="),
        (f"t={T}", "no v1="),
        (f"t={T},garbage,v1=ab", "without '='"),
        ("t=soon,v1=ab", "whole Unix seconds"),
        ("t=-5,v1=ab", "whole Unix seconds"),
        ("t=1.5,v1=ab", "whole Unix seconds"),
        ("t=\u00b9\u00b2,v1=ab", "whole Unix seconds"),
        (f"t={T},t={T + 1},v1=ab", "two different timestamps"),
        ("t=" + "9" * 40 + ",v1=ab", "whole Unix seconds"),
    ],
)
def test_missing_or_malformed_headers_are_rejected(header: str | None, reason: str) -> None:
    """A header that cannot be read is refused with a reason, before any MAC is computed."""
    with pytest.raises(WebhookVerificationError, match=reason):
        parse_signature_header(header)
    with pytest.raises(WebhookVerificationError, match=reason):
        verify(BODY, header, SECRET, now=T)


def test_the_body_is_parsed_only_after_the_signature_holds() -> None:
    """An unsigned non-JSON body is a signature failure; a signed one is a payload failure."""
    junk = b"\xff not json"
    with pytest.raises(WebhookVerificationError, match="does not match") as unsigned:
        verify(junk, f"t={T},v1={'0' * 64}", SECRET, now=T)
    assert not isinstance(unsigned.value, WebhookPayloadError)
    with pytest.raises(WebhookPayloadError, match="not a webhook event"):
        verify(junk, sign(junk, SECRET, timestamp=T), SECRET, now=T)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"created_at":"2026-07-20T10:40:00Z","type":"analyze.task.ready"}',
        b'{"id":"whe_1","created_at":"2026-07-20T10:40:00","type":"analyze.task.ready"}',
        b'{"id":"whe_1","created_at":"2026-07-20T10:40:00Z","type":"x","data":[1]}',
    ],
    ids=["not-an-object", "no-id", "naive-created_at", "data-not-an-object"],
)
def test_signed_bodies_that_break_the_envelope_are_payload_errors(body: bytes) -> None:
    """A verified body must carry ``id``, an aware ``created_at``, ``type`` and object ``data``."""
    with pytest.raises(WebhookPayloadError):
        verify(body, sign(body, SECRET, timestamp=T), SECRET, now=T)


def test_the_secret_never_appears_in_errors() -> None:
    """No verification error, whatever the failure, names the secret or the expected MAC."""
    expected = mac(BODY, SECRET, str(T))
    headers = [None, "t=x,v1=y", f"t={T},v1={'0' * 64}", sign(BODY, SECRET, timestamp=T - 999)]
    for header in headers:
        with pytest.raises(WebhookVerificationError) as caught:
            verify(BODY, header, SECRET, now=T)
        text = f"{caught.value!s} {caught.value!r}"
        assert SECRET not in text
        assert expected not in text


def test_empty_secrets_and_negative_tolerances_are_programmer_errors() -> None:
    """Misconfiguration raises ValueError, never a verification error that could be swallowed."""
    header = sign(BODY, SECRET, timestamp=T)
    for secret in ("", b"", [], [SECRET, ""]):
        with pytest.raises(ValueError, match="empty"):
            verify_signature(BODY, header, secret, now=T)
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(BODY, header, SECRET, now=T, tolerance=-1)


@settings(max_examples=50)
@given(
    body=st.binary(max_size=256),
    secret=st.text(min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**40),
    flip=st.integers(min_value=0),
)
def test_sign_then_verify_round_trips_and_any_flipped_byte_fails(
    body: bytes, secret: str, timestamp: int, flip: int
) -> None:
    """For any body, secret and time, `sign` verifies, and flipping one body bit does not."""
    header = sign(body, secret, timestamp=timestamp)
    assert verify_signature(body, header, secret, now=timestamp) == timestamp
    if body:
        index = flip % len(body)
        tampered = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]
        with pytest.raises(WebhookVerificationError):
            verify_signature(tampered, header, secret, now=timestamp)
