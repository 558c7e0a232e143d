"""The transport builds each request URL from the parsed base URL, and keeps a bounded few."""

from __future__ import annotations

import pytest
from yarl import URL

from asyncbatch import RetryPolicy
from asyncbatch._transport import _URL_CACHE_SIZE, Transport

BASES = [
    "https://api.twelvelabs.io/v1.3",
    "http://127.0.0.1:8080/v1.3",
    "http://localhost",
    "https://user:p%40ss@api.example.com:8443/a/./b/../v1.3",
    "https://[::1]:9000/prefix/v1.3",
    "https://api.example.com/caf%C3%A9/v1.3",
    "https://api.example.com/café/v1.3",
    "https://API.Example.COM/v1.3",
    "https://api.example.com/v1.3?region=eu",
]
PATHS = [
    "/analyze/batches",
    "/analyze/batches/68f4ddaf8aaa60d33df0e800",
    "/analyze/batches/68F4DDAF8AAA60D33DF0E800/cancel",
    "/analyze/batches/68f4ddaf8aaa60d33df0e800/results",
    "/odd path/with spaces?and=query",
    "/dots/../here",
]


def _transport(base_url: str) -> Transport:
    return Transport(api_key="k", base_url=base_url, timeout=1.0, retry=RetryPolicy())


@pytest.mark.parametrize("base_url", BASES)
@pytest.mark.parametrize("path", PATHS)
def test_a_built_url_is_the_url_aiohttp_would_parse(base_url: str, path: str) -> None:
    """Whatever the base (port, userinfo, dot segments, IPv6, percent-encoding, non-ASCII,
    a query) and the path, the URL the transport hands aiohttp is the URL of the whole string."""
    assert URL(_transport(base_url)._url(path)) == URL(base_url + path)


def test_the_url_cache_stays_bounded_and_right() -> None:
    """More batches than the cache holds: every URL is still the right one, the cache never
    grows past its bound, and a URL asked for again is the same object (parsed once)."""
    transport = _transport("https://api.example.com/v1.3")
    for n in range(2 * _URL_CACHE_SIZE + 10):
        path = f"/analyze/batches/{n:024x}"
        url = transport._url(path)
        assert isinstance(url, URL)  # built from the parsed base, not left to aiohttp to parse
        assert url == URL("https://api.example.com/v1.3" + path)
        assert transport._url(path) is url
        assert len(transport._urls) <= _URL_CACHE_SIZE
