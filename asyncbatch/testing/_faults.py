"""Seeded fault injection: which request fails, and how.

A `FaultRule` says how often (``rate``), how (``kinds``) and where
(``endpoints``) to fail. For every request the `FaultInjector` asks each rule
that covers the endpoint, in order, for one draw from its seeded generator; the
first draw below the rule's rate picks one of the rule's kinds that makes sense
for that endpoint. The same seed and the same requests give the same faults.

When each kind strikes (see docs/simulator.md):

* ``500``/``502``/``503``/``504`` and ``429`` answer *instead of* the endpoint:
  nothing happens to any batch;
* ``latency`` waits, then the request proceeds normally;
* ``drop``, ``truncate`` and ``malformed`` strike *after* the endpoint acted:
  the batch was created, canceled or deleted, but the answer is lost;
* ``stale`` answers a status read with an older snapshot of the batch.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

ENDPOINTS = ("create", "list", "retrieve", "delete", "results", "cancel")


class FaultKind(enum.StrEnum):
    """Every fault the simulator can inject."""

    HTTP_500 = "500"
    HTTP_502 = "502"
    HTTP_503 = "503"
    HTTP_504 = "504"
    RATE_LIMIT = "429"
    LATENCY = "latency"
    DROP = "drop"
    TRUNCATE = "truncate"
    MALFORMED = "malformed"
    STALE = "stale"


STATUS_FAULTS = frozenset(
    {
        FaultKind.HTTP_500,
        FaultKind.HTTP_502,
        FaultKind.HTTP_503,
        FaultKind.HTTP_504,
        FaultKind.RATE_LIMIT,
    }
)
_BODY_FAULTS = frozenset({FaultKind.TRUNCATE, FaultKind.MALFORMED})
_STALE_ENDPOINTS = frozenset({"retrieve", "list"})


def applies(kind: FaultKind, endpoint: str) -> bool:
    """Whether ``kind`` means anything on ``endpoint`` (delete has no body, only reads go stale)."""
    if kind in _BODY_FAULTS:
        return endpoint != "delete"
    if kind is FaultKind.STALE:
        return endpoint in _STALE_ENDPOINTS
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """Fail a fraction ``rate`` of the requests to ``endpoints`` (all when None) with ``kinds``.

    ``retry_after`` is the ``Retry-After`` of an injected 429 in seconds and
    ``latency`` the longest added delay (each delay is drawn between half of it
    and all of it). Their defaults are short (1 s) so that a faulted run ends
    in seconds; ask for long ones explicitly.
    """

    rate: float
    kinds: Collection[FaultKind | str] = tuple(FaultKind)
    endpoints: Collection[str] | None = None
    retry_after: float = 1.0
    latency: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be 0 to 1, got {self.rate!r}")
        object.__setattr__(self, "kinds", tuple(FaultKind(k) for k in self.kinds))
        if self.endpoints is not None:
            unknown = set(self.endpoints) - set(ENDPOINTS)
            if unknown:
                raise ValueError(f"unknown endpoints {sorted(unknown)}; known: {ENDPOINTS}")
            object.__setattr__(self, "endpoints", tuple(self.endpoints))
        if self.retry_after < 0 or self.latency < 0:
            raise ValueError("retry_after and latency must not be negative")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: its kind, and the numbers it needs."""

    kind: FaultKind
    retry_after: float = 0.0
    delay: float = 0.0


class FaultInjector:
    """Draws the fault, if any, for each request from seeded rules."""

    def __init__(self, rules: Sequence[FaultRule], seed: int = 0) -> None:
        self.rules = tuple(rules)
        self._rng = random.Random(f"faults-{seed}")

    def draw(self, endpoint: str) -> Fault | None:
        """The fault for one request to ``endpoint``, or None."""
        for rule in self.rules:
            if rule.endpoints is not None and endpoint not in rule.endpoints:
                continue
            if self._rng.random() >= rule.rate:
                continue
            kinds = [FaultKind(k) for k in rule.kinds if applies(FaultKind(k), endpoint)]
            if not kinds:
                continue
            kind = self._rng.choice(kinds)
            delay = self._rng.uniform(rule.latency / 2, rule.latency)
            return Fault(kind, retry_after=rule.retry_after, delay=delay)
        return None
