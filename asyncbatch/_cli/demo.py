"""``asyncbatch demo`` and ``asyncbatch simulate``: the command line around the simulator.

The demo runs a `Simulator` in this process on a sped-up clock, creates a few
batches of different sizes, cancels one once it is under way, and follows
them all live with the same code as ``asyncbatch watch``. Its API key is made
up on the spot and never shown. Poll intervals shrink with the time scale, so
the demo looks the same at any speed and ends by itself.
"""

from __future__ import annotations

import argparse
import secrets
from datetime import UTC, datetime
from typing import Any

from .._client import Client
from .._errors import ConflictError
from .._events import Event, EventKind
from ..testing import ScaledClock, Simulator, SimulatorConfig, loop_clock, serve
from ..testing._sim_config import config_flags
from .board import Board, Row
from .exits import EXIT_FAILED, EXIT_OK
from .io import CommandError, Streams
from .view import make_view
from .watch import follow

DEMO_BATCHES: tuple[tuple[str, int, float], ...] = (
    ("trailers", 4, 0.0),
    ("lectures", 12, 0.0),
    ("interviews", 24, 0.05),
    ("archive", 40, 0.15),
    ("mistake", 30, 0.0),
)
"""(name, items, fraction of items whose asset fails) of each demo batch; the one named
``mistake`` gets canceled."""

CANCEL_AT = 0.25
"""The fraction of its items finished when the demo cancels the ``mistake`` batch."""

ITEM_SECONDS = 20.0
"""Simulated seconds one item takes on average; at the default 10x, 2 s of wall time."""

_REAL_API_HINT = """\
To do the same against the real API:
  export TWELVELABS_API_KEY=...        # your key; asyncbatch never prints it
  asyncbatch create examples/requests.jsonl --prompt "Summarise it." --watch
  asyncbatch watch --all-active        # or: asyncbatch watch ID ID ...
  asyncbatch results ID -o results.jsonl"""


async def demo_command(args: argparse.Namespace, streams: Streams) -> int:
    """Run the demo; 0 when every batch reached its end, as planned."""
    api_key = args.api_key or "demo-" + secrets.token_hex(12)
    streams.secrets.append(api_key)
    scale = args.time_scale
    simulator = Simulator(
        api_key=api_key,
        seed=args.seed,
        clock=ScaledClock(scale, base=loop_clock),
        start=datetime.now(UTC),
        item_seconds=ITEM_SECONDS,
        failing_assets=_failing_assets(),
    )
    async with simulator, Client(api_key=api_key, base_url=simulator.base_url) as client:
        streams.note(f"demo: a simulated batch API at {simulator.base_url}, {scale:g}x real time")
        batch_ids = [await _create(client, name, size, streams) for name, size, _ in DEMO_BATCHES]
        canceler = _Canceler(client, batch_ids[-1], DEMO_BATCHES[-1][0])
        view = make_view(streams.stdout, jsonl=args.jsonl, plain=args.plain, note=streams.note)
        board = Board()
        for batch_id, (name, _, _) in zip(batch_ids, DEMO_BATCHES, strict=True):
            board.add(batch_id, name)
        options = _demo_options(scale)
        board = await follow(client, batch_ids, view, options, board=board, on_event=canceler)
    if canceler.note:  # told only now: a note on stderr would tear a live view on stdout
        streams.note(canceler.note)
    streams.note(_REAL_API_HINT)
    return EXIT_OK if _all_done(board) else EXIT_FAILED


def _failing_assets() -> set[str]:
    """The assets that fail in each demo batch: its fraction of them, evenly spread."""
    failing = set()
    for name, size, fraction in DEMO_BATCHES:
        count = round(size * fraction)
        failing |= {f"{name}-{int((j + 0.5) * size / count)}" for j in range(count)}
    return failing


async def _create(client: Client, name: str, size: int, streams: Streams) -> str:
    requests = [
        {"video": {"type": "asset_id", "asset_id": f"{name}-{i}"}, "custom_id": f"{name}-{i}"}
        for i in range(size)
    ]
    created = await client.batches.create(
        requests, defaults={"prompt": {"input_text": "Summarise the video."}}
    )
    streams.note(f"demo: created batch {created.batch_id} ({name}, {size} items)")
    return created.batch_id


class _Canceler:
    """The demo's event hook: cancels one batch once a quarter of it is done."""

    def __init__(self, client: Client, batch_id: str, name: str) -> None:
        self._client = client
        self._batch_id = batch_id
        self._name = name
        self._done = False
        self.note = ""
        """What the canceler did, for the end of the demo."""

    async def __call__(self, event: Event, row: Row) -> None:
        batch = event.batch
        if self._done or event.batch_id != self._batch_id or batch is None or event.is_final:
            return
        if batch.fraction_done < CANCEL_AT:
            return
        self._done = True
        try:
            await self._client.batches.cancel(self._batch_id)
        except ConflictError:  # it finished first: nothing left to cancel
            return
        self.note = (
            f"demo: canceled {self._name} midway, at {batch.finished_items}/"
            f"{batch.total_items} items: queued items were canceled, running ones finished"
        )


def _demo_options(scale: float) -> dict[str, Any]:
    """Watcher options in simulated seconds, scaled to wall time."""
    return {
        "min_interval": 5.0 / scale,
        "max_interval": 20.0 / scale,
        "stagger": 1.0 / scale,
        "max_failures": 6,
    }


def _all_done(board: Board) -> bool:
    return all(row.final is EventKind.DONE for row in board.rows.values())


def simulator_config(args: argparse.Namespace, api_key: str) -> SimulatorConfig:
    """The config that ``simulate``'s flags describe (repeated flags as tuples)."""
    options: dict[str, Any] = {}
    for name, _, _ in config_flags():
        value = getattr(args, name)
        options[name] = tuple(value) if isinstance(value, list) else value
    return SimulatorConfig(api_key=api_key, **options)


async def simulate_command(args: argparse.Namespace, streams: Streams, api_key: str) -> int:
    """Serve the simulator until cancelled (Ctrl-C); prints its base URL on stdout."""
    config = simulator_config(args, api_key)

    def ready(simulator: Simulator) -> None:
        streams.out(simulator.base_url)
        streams.note(
            f"simulate: serving at {simulator.base_url}; use it with --base-url "
            f"{simulator.base_url} (or $TWELVELABS_BASE_URL) and the same API key. "
            "Ctrl-C stops it."
        )
        for url in config.webhook_urls:
            streams.note(f"simulate: sending signed webhooks to {url}")

    try:
        await serve(config, ready=ready)
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        raise CommandError(
            f"simulate: cannot serve on {where}: {exc.strerror or exc}", EXIT_FAILED
        ) from None
    return EXIT_OK
