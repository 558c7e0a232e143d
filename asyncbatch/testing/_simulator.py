"""`Simulator`: the TwelveLabs batch API on 127.0.0.1, in-process, for tests and demos.

It ties the pieces together: the batch model (`_sim_model`) read at the
clock's time (`_sim_account`), served over aiohttp.web (`_sim_http`) with
seeded faults (`_faults`), and signed webhook deliveries (`_sim_outbox`,
`_sim_webhooks`) sent by a task the ``async with`` block owns, configured by
one `SimulatorConfig` (`_sim_config`). `serve` is the command line's entry
point (``asyncbatch simulate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import fields, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
from aiohttp import web

from ._clocks import Clock, ManualClock, ScaledClock, loop_clock
from ._faults import FaultInjector, FaultRule
from ._sim_account import SimulatedAccount
from ._sim_config import DEFAULT_START, SimulatorConfig, takes_fields_of
from ._sim_http import API_PREFIX, Counters, SimulatorStats, build_app
from ._sim_model import Lifecycle, result_lines
from ._sim_outbox import Outbox
from ._sim_webhooks import WebhookAttempt, WebhookFaults, WebhookSender


class Simulator:
    """A faithful stand-in for the TwelveLabs batch-analysis API, served on 127.0.0.1.

    ``async with Simulator(api_key="k", seed=1) as sim:`` binds a free port
    (or ``port``) and serves the six ``/analyze/batches`` endpoints at
    ``sim.base_url`` (``http://127.0.0.1:PORT/v1.3``); point a client at it
    with that base URL and the same API key.

    Batches progress by themselves as the clock moves: nothing runs in the
    background; each read computes the state at the current time.

    It takes the fields of `SimulatorConfig` as keywords (the options and
    their defaults are listed there, once), or a whole config with
    `Simulator.from_config`.

    Deliveries are sent by a task that ``async with`` starts, which sleeps
    until the next item or batch end. With a `ManualClock`, no task runs:
    call `deliver_due_webhooks` after moving the clock.

    Limits: one account, one API key; no ``/analyze/tasks`` or assets; the
    combined-video-duration limit is not checked. See docs/simulator.md for
    every choice made where the API is not documented.
    """

    @takes_fields_of(SimulatorConfig)
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        lifecycle = Lifecycle(
            item_seconds=config.item_seconds,
            item_failure_rate=config.item_failure_rate,
            items_at_once=config.items_at_once,
            pending_seconds=config.pending_seconds,
            cancel_seconds=config.cancel_seconds,
            expire_after=config.expire_after,
            retention=config.retention,
            max_active=config.max_active,
            missing_assets=frozenset(config.missing_assets),
            failing_assets=frozenset(config.failing_assets),
            unready_assets=frozenset(config.unready_assets),
        )
        self.seed = config.seed
        self.clock: Clock = config.clock or _scaled(config.time_scale)
        start = (config.start or DEFAULT_START).astimezone(UTC)
        self._account = SimulatedAccount(lifecycle, seed=config.seed, clock=self.clock, start=start)
        rules = list(config.faults)
        if config.fault_rate:
            rules.append(FaultRule(rate=config.fault_rate))
        self._counters = Counters()
        self.app = build_app(
            self._account,
            api_key=config.api_key,
            injector=FaultInjector(rules, config.seed),
            counters=self._counters,
            gateway_errors=config.gateway_errors,
        )
        self._host = config.host
        self._port = config.port
        self._runner: web.AppRunner | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._webhooks = self._webhook_sender(
            config.webhook_urls,
            config.webhook_secret,
            config.webhook_fault_rates(),
            config.webhook_clock,
            attempts=config.webhook_attempts,
            backoff=config.webhook_backoff,
        )

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Self:
        """A simulator with every option of ``config``."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(config)})

    def _webhook_sender(
        self,
        urls: Sequence[str],
        secret: str | None,
        faults: WebhookFaults,
        clock: Clock | None,
        *,
        attempts: int,
        backoff: float,
    ) -> WebhookSender | None:
        """The sender for ``urls`` (None without any), wired into the account."""
        if not urls:
            return None
        if not secret:
            raise ValueError("webhook_urls need a webhook_secret to sign deliveries with")
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"a webhook URL must be http or https, got {url!r}")
        account = self._account
        stamp = clock or (lambda: account.unix(account.now()))
        outbox = Outbox(
            urls=tuple(urls),
            lifecycle=account.lifecycle,
            stamp=stamp,
            attempts=attempts,
            backoff=backoff,
            seed=self.seed,
        )
        account.webhook_records = outbox.batch_records
        sender = WebhookSender(
            outbox, account, secret=secret, faults=faults, seed=self.seed, stamp=stamp
        )
        account.on_change = sender.changed
        return sender

    def __repr__(self) -> str:
        where = self.base_url if self._runner is not None else "not started"
        return f"<Simulator {where} seed={self.seed}>"

    # -- serving ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start answering. Prefer ``async with``."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        if self._webhooks is not None:
            await self._webhooks.open()

    async def aclose(self) -> None:
        """Stop serving and close every connection. Idempotent, and complete even when cancelled."""
        runner, self._runner = self._runner, None
        # Shielded: `serve` ends by cancellation, and its sockets must still be closed.
        with anyio.CancelScope(shield=True):
            if self._webhooks is not None:
                await self._webhooks.close()
            if runner is not None:
                await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        if self._webhooks is None or isinstance(self.clock, ManualClock):
            return self
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.aclose)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)  # runs first on the way out
            group.start_soon(self._webhooks.run, _loop_rate(self.clock))
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            await self.aclose()
        else:
            await stack.__aexit__(exc_type, exc, tb)

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1.3``, the URL to give a client; needs a started simulator."""
        if self._runner is None:
            raise RuntimeError("the simulator is not running: use `async with Simulator(...)`")
        return f"http://{self._host}:{self._port}{API_PREFIX}"

    @property
    def stats(self) -> SimulatorStats:
        """Requests per endpoint, faults per kind and open connections, as of now."""
        server = self._runner.server if self._runner is not None else None
        return SimulatorStats(
            requests=dict(self._counters.requests),
            faults={str(kind): n for kind, n in self._counters.faults.items()},
            open_connections=len(server.connections) if server is not None else 0,
        )

    # -- webhooks --------------------------------------------------------------

    async def deliver_due_webhooks(self) -> int:
        """Send every webhook attempt due now (first tries and retries); the POSTs made.

        The background task does this by itself; call it when the clock is a
        `ManualClock` (after each ``advance``) or the simulator was started
        with `start` rather than ``async with``.
        """
        return await self._sender().deliver_due()

    async def webhooks_settled(self) -> None:
        """Wait until no delivery is queued or being sent (needs the background task).

        Deliveries of items that have not ended yet do not count; retries
        waiting for their backoff do, so this returns after the last attempt.
        """
        if self._exit_stack is None:
            raise RuntimeError("no delivery task runs: use `async with` and a loop-driven clock")
        await self._sender().settled()

    @property
    def webhook_log(self) -> list[WebhookAttempt]:
        """Every webhook POST made so far, oldest first (a copy)."""
        return list(self._webhooks.log) if self._webhooks is not None else []

    def _sender(self) -> WebhookSender:
        if self._webhooks is None:
            raise RuntimeError("this simulator has no webhook_urls")
        return self._webhooks

    # -- direct access for tests (no HTTP, no faults, not counted) -------------

    def now(self) -> float:
        """The simulator's clock reading."""
        return self._account.now()

    def unix_now(self) -> float:
        """Unix seconds on the simulator's timeline (``start`` plus clock time elapsed).

        Give it to a webhook receiver as its clock, so that deliveries dated on
        this timeline pass its timestamp check.
        """
        return self._account.unix(self._account.now())

    def clock_at(self, moment: datetime) -> float:
        """The clock reading at which the simulator's timestamps say ``moment``."""
        return self._account.clock_at(moment.timestamp())

    def create_batch(
        self,
        requests: int | Sequence[Mapping[str, Any]] = 3,
        *,
        analysis_mode: str = "general",
        defaults: Mapping[str, Any] | None = None,
        model_name: str = "pegasus1.5",
    ) -> dict[str, Any]:
        """Create a batch as ``POST /analyze/batches`` would; returns its 201 body.

        ``requests`` is the list of request objects, or a count of plain ones
        (custom IDs ``item-0``, ``item-1``...). The rules and the active-batch
        limit apply: a refusal raises `SimulatorError`.
        """
        if isinstance(requests, int):
            requests = [
                {"video": {"type": "asset_id", "asset_id": f"asset-{i}"}, "custom_id": f"item-{i}"}
                for i in range(requests)
            ]
        if defaults is None:
            defaults = _default_defaults(analysis_mode)
        body = {
            "model_name": model_name,
            "analysis_mode": analysis_mode,
            "defaults": dict(defaults),
            "requests": list(requests),
        }
        return self._account.create(body)

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch's status body now; `SimulatorError` (404) when it does not exist."""
        now = self._account.now()
        return self._account.view(self._account.store.get(batch_id, now), now)

    def batch_ids(self) -> list[str]:
        """Every existing batch's ID, newest first."""
        return [r.batch_id for r in self._account.store.visible(self._account.now())]

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's results lines now, one dict per item."""
        now = self._account.now()
        return result_lines(self._account.store.get(batch_id, now), now)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel as ``POST .../cancel`` would; returns the 202 body."""
        return self._account.cancel(batch_id)

    def delete_batch(self, batch_id: str) -> None:
        """Delete as ``DELETE /analyze/batches/{id}`` would: 409 unless terminal."""
        self._account.delete(batch_id)

    def remove_batch(self, batch_id: str) -> None:
        """Make the batch vanish whatever its status, so that it answers 404."""
        self._account.store.get(batch_id, self._account.now()).deleted = True
        self._account.changed()

    def age_batch(self, batch_id: str, seconds: float) -> None:
        """Move the batch ``seconds`` into the past: as if created that much earlier.

        Ageing past ``expire_after`` expires it; past ``retention`` it is gone.
        """
        if seconds < 0:
            raise ValueError("a batch can only be aged forward")
        self._account.store.get(batch_id, self._account.now()).shift(seconds)
        self._account.changed()


def _loop_rate(clock: Clock) -> float | None:
    """Simulator seconds per event-loop second, or None when the clock is not the loop's."""
    if clock is loop_clock:
        return 1.0
    if isinstance(clock, ScaledClock):
        return clock.scale
    return None


def _default_defaults(analysis_mode: str) -> dict[str, Any]:
    if analysis_mode == "time_based_metadata":
        return {
            "response_format": {
                "type": "segment_definitions",
                "segment_definitions": [{"id": "scenes", "description": "Scene changes"}],
            }
        }
    return {"prompt": {"input_text": "Summarise the video."}}


async def serve(
    config: SimulatorConfig, *, ready: Callable[[Simulator], object] | None = None
) -> None:
    """Serve a simulator until cancelled; ``ready(sim)`` is called once it listens.

    Timestamps start at the real current time; the clock is the event loop's,
    sped up ``config.time_scale`` times. Webhook signatures are dated by the
    system clock, so that a receiver's timestamp check holds at any time scale.
    """
    sim = Simulator.from_config(
        replace(
            config,
            start=config.start or datetime.now(UTC),
            webhook_clock=config.webhook_clock or time.time,
        )
    )
    async with sim:
        if ready is not None:
            ready(sim)
        await anyio.sleep_forever()


def _scaled(time_scale: float) -> Clock:
    """The event loop's clock, sped up ``time_scale`` times."""
    return loop_clock if time_scale == 1.0 else ScaledClock(time_scale, base=loop_clock)
