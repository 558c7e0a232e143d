"""Redaction: the one place that decides how URLs with passwords and secrets are hidden.

Reprs, error messages, log lines and the command line's output all go through
`redact_url` / `redact_urls` (a URL's ``user:password@`` becomes ``***@``) and
`scrub_secrets` (the API key and webhook secrets become ``***``).

Secrets are matched as whole tokens, never inside longer words: masking every
substring would turn a one-letter key ``e`` into ``***rror`` wherever
"error" appears, and tell an onlooker what the key is. A secret shorter than
`MIN_TOKEN_SECRET` characters is masked only where it stands alone, as the
key itself would be printed (``--api-key e``, ``'e'``), since as a token it
would still hit ordinary words.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

MASK: Final = "***"
MIN_TOKEN_SECRET: Final = 4
"""Secrets shorter than this are masked only where they stand alone."""

# ``scheme://userinfo@``: everything up to the last ``@`` before the path, since an
# unescaped ``@`` in a password still ends at the last one (as urllib reads it).
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")
_WORD = r"A-Za-z0-9_"
_ALONE = r"\s'\"=,:;()\[\]{}<>"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return _USERINFO.sub(MASK + "@", url)


def redact_urls(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(MASK + "@", text) if "@" in text else text


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every whole-token occurrence of each secret replaced by ``***``,
    and URL userinfo redacted."""
    for secret in secrets:
        if secret and secret in text:
            text = _pattern(secret).sub(MASK, text)
    return redact_urls(text)


@functools.lru_cache(maxsize=64)
def _pattern(secret: str) -> re.Pattern[str]:
    # A secret may itself contain any character, so its own edges decide nothing:
    # only the characters around it must not continue a word.
    edge = _WORD if len(secret) >= MIN_TOKEN_SECRET else f"^{_ALONE}"
    return re.compile(rf"(?<![{edge}]){re.escape(secret)}(?![{edge}])")
