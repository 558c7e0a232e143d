"""`SimulatorConfig`: every option of the simulator, declared once.

Three things read this one declaration: `Simulator(...)` takes exactly these
fields as keywords (`takes_fields_of` copies the dataclass's typed signature),
`serve` takes a config, and ``asyncbatch simulate`` / ``demo`` build their
flags from the fields whose metadata holds a `Flag`. A new option is a new
field here and nothing else.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from ._clocks import Clock
from ._faults import FaultRule
from ._sim_http import ErrorStyle
from ._sim_webhooks import WebhookFaults

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Wall-clock time of the simulator's first clock reading, unless told otherwise."""

FlagKind = Literal["text", "whole", "port", "positive", "rate", "url"]
"""How the command line reads a flag's value: any text, an integer, a port
(0 to 65535), a positive number, a fraction (0 to 1), an http(s) URL."""


@dataclass(frozen=True, slots=True)
class Flag:
    """How a config field appears on the command line (``item_seconds`` is ``--item-seconds``).

    ``help`` says what it does (the default is appended); ``cli_default``
    replaces the field's default there, when the command wants another one.
    """

    help: str
    kind: FlagKind = "text"
    metavar: str | None = None
    cli_default: object = None
    repeat: bool = False
    """Given once per value (``--webhook-url``), into a tuple field named in the plural."""


def _flag(
    default: Any,
    help: str,
    kind: FlagKind = "text",
    metavar: str | None = None,
    **options: Any,
) -> Any:
    """A field that is also a flag of ``asyncbatch simulate``."""
    flag = Flag(help, kind, metavar, **options)
    return field(default=default, metadata={"flag": flag})


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """Every option of the simulator; `Simulator(...)` takes the same names as keywords.

    Args:
        api_key: the only key accepted; any other (or none) gets 401.
        seed: all randomness (IDs, item durations, failures, faults) comes from it.
        clock: seconds as a float; default the event loop's clock (virtual
            under `VirtualTimeLoop`) sped up ``time_scale`` times. Use
            `ManualClock` to step time by hand.
        time_scale: simulated seconds per real second of the default clock.
        start: wall-clock time (aware) of the clock's first reading; every
            timestamp is ``start`` plus clock time elapsed. None: 2026-01-01
            for `Simulator`, the current time for `serve`.
        item_seconds: mean time one item takes (each draws 0.5x to 1.5x).
        item_failure_rate: fraction of items that end ``failed``.
        items_at_once: items of one batch processed at the same time.
        pending_seconds: mean time from creation to the first item starting.
        cancel_seconds: least time a canceled batch stays ``canceling``.
        expire_after: seconds from creation to ``expires_at`` (the API: 24 h).
        retention: seconds from creation until the batch is gone (the API: 30 days).
        max_active: active batches allowed per account (the API: 5).
        missing_assets: asset IDs that answer create with 404.
        failing_assets: asset IDs whose items always end ``failed`` (asset_unavailable).
        unready_assets: asset IDs that answer create with 409.
        faults: `FaultRule` s, tried in order for every request.
        fault_rate: shorthand for one more rule with every kind at short
            values (``Retry-After`` 1 s, latency up to 1 s).
        gateway_errors: ``"nested"`` or ``"flat"`` body for 401 and injected 429.
        host, port: where to listen; port 0 picks a free one.
        webhook_urls: endpoints that get a signed POST when an item ends
            ``ready`` or ``failed`` and when a batch ends (see docs/simulator.md).
        webhook_secret: the key deliveries are signed with; needed with URLs.
        webhook_faults: rates of bad signatures, stale timestamps and duplicates.
        webhook_fault_rate: shorthand for ``webhook_faults``: duplicates at this
            rate, bad signatures and stale timestamps at half of it each.
        webhook_attempts: attempts per delivery before it is given up.
        webhook_backoff: seconds before the 2nd attempt, doubling after each.
        webhook_clock: Unix seconds for ``t=`` and ``created_at``; None: the
            simulator's own timeline for `Simulator`, the system clock for `serve`.

    The API key and webhook secret are left out of the repr.
    """

    api_key: str = field(repr=False)
    host: str = _flag("127.0.0.1", "address to listen on", "text", "HOST")
    port: int = _flag(0, "port to listen on; 0 picks a free one", "port", "PORT", cli_default=8000)
    seed: int = _flag(0, "seed for every random choice", "whole", "N")
    clock: Clock | None = None
    time_scale: float = _flag(1.0, "simulated seconds per real second", "positive", "X")
    start: datetime | None = None
    item_seconds: float = _flag(20.0, "mean time one item takes", "positive", "S")
    item_failure_rate: float = _flag(0.0, "fraction of items that fail", "rate", "R")
    items_at_once: int = 4
    pending_seconds: float = 2.0
    cancel_seconds: float = 1.0
    expire_after: float = _flag(86_400.0, "seconds until a batch expires", "positive", "S")
    retention: float = 30 * 86_400.0
    max_active: int = 5
    missing_assets: Collection[str] = ()
    failing_assets: Collection[str] = ()
    unready_assets: Collection[str] = ()
    faults: Sequence[FaultRule] = ()
    fault_rate: float = _flag(0.0, "fraction of requests given a fault", "rate", "F")
    gateway_errors: ErrorStyle = "nested"
    webhook_urls: Sequence[str] = _flag(
        (), "POST signed webhooks to URL (repeat for several)", "url", "URL", repeat=True
    )
    webhook_secret: str | None = field(
        default=None,
        repr=False,
        metadata={
            "flag": Flag(
                "secret to sign them with (default: $TWELVELABS_WEBHOOK_SECRET); never printed",
                metavar="SECRET",
            )
        },
    )
    webhook_faults: WebhookFaults | None = None
    webhook_fault_rate: float = _flag(
        0.0,
        "fraction of deliveries with a bad signature or stale timestamp, and of duplicates",
        "rate",
        "F",
    )
    webhook_attempts: int = 3
    webhook_backoff: float = 2.0
    webhook_clock: Clock | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("the simulator needs an API key to check")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.clock is not None and self.time_scale != 1.0:
            raise ValueError("give a clock or a time_scale, not both")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale}")
        if self.webhook_faults is not None and self.webhook_fault_rate:
            raise ValueError("give webhook_faults or webhook_fault_rate, not both")

    def webhook_fault_rates(self) -> WebhookFaults:
        """``webhook_faults``, or each kind at ``webhook_fault_rate`` (signature kinds share it)."""
        if self.webhook_faults is not None:
            return self.webhook_faults
        rate = self.webhook_fault_rate
        return WebhookFaults(bad_signature=rate / 2, stale_timestamp=rate / 2, duplicate=rate)


def config_flags() -> list[tuple[str, Flag, Any]]:
    """The config's command-line flags in declaration order: (field name, flag, default)."""
    declared = fields(SimulatorConfig)
    return [(f.name, f.metadata["flag"], f.default) for f in declared if "flag" in f.metadata]


_P = ParamSpec("_P")
_S = TypeVar("_S")


def takes_fields_of(
    config: Callable[_P, SimulatorConfig],
) -> Callable[[Callable[[_S, SimulatorConfig], None]], Callable[Concatenate[_S, _P], None]]:
    """Give ``__init__(self, config)`` the keywords of ``config`` (a dataclass) instead.

    Type checkers and `inspect.signature` then show and check each keyword as the
    dataclass declares it, so that `Simulator(api_key=..., seed=...)` is typed
    without listing the options a second time.
    """

    def decorate(
        init: Callable[[_S, SimulatorConfig], None],
    ) -> Callable[Concatenate[_S, _P], None]:
        @functools.wraps(init)
        def __init__(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
            init(self, config(*args, **kwargs))

        own = inspect.signature(init).parameters["self"]
        options = inspect.signature(config).parameters.values()
        __init__.__signature__ = inspect.Signature([own, *options])  # type: ignore[attr-defined]
        return __init__

    return decorate
