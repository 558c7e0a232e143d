"""``asyncbatch watch --state URL [--replica]``: the watcher's durable state, and replicas.

`watch_store` opens the store a ``--state`` URL names (`open_store`), reads
what it holds (so an unreachable Redis or an unwritable SQLite path fails
here, with one line, not in the middle of the view), and gives the `Watcher`
options that go with it: ``state`` and ``resume=True`` always, so that the
batches the store knows and that have not ended are watched again; with
``--replica``, the fleet's shared ``gate`` (``--rate``/``--burst``), this
replica's ``leases`` (``--owner``/``--lease``) and ``stop_when_done=False``:
a replica keeps running, taking over batches as others stop, until
``--deadline`` or Ctrl-C.

Acknowledgement itself is `watch`'s: an event is acknowledged once the
view has written (and flushed) it.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from .._errors import StateStoreError
from .._redact import redact_url
from .._stores.memory import StoredBatch
from .._stores.url import OpenedStore, open_store
from .exits import EXIT_FAILED, EXIT_USAGE
from .io import CommandError

DEFAULT_LEASE_SECONDS = 15.0


@dataclass(slots=True)
class WatchStore:
    """An opened ``--state`` and what it means for this watch."""

    shown: str
    """The URL without its password, for messages."""
    records: list[StoredBatch]
    """What the store held before the watch began."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra `Watcher` options: state, resume, and for a replica gate, leases, stop_when_done."""
    owner: str | None = None
    """This replica's name, with ``--replica``."""

    def unfinished(self) -> list[str]:
        """IDs of the batches the store knows whose final event was not acknowledged."""
        return [r.batch_id for r in self.records if not r.final]

    def ended(self) -> dict[str, StoredBatch]:
        """Records of the batches whose final event was acknowledged, by ID."""
        return {r.batch_id: r for r in self.records if r.final}


def default_owner() -> str:
    """``HOSTNAME-PID``: unique among replicas that do not share a host and PID namespace."""
    return f"{socket.gethostname()}-{os.getpid()}"


@asynccontextmanager
async def watch_store(args: argparse.Namespace) -> AsyncIterator[WatchStore | None]:
    """The opened ``--state`` (None without one), closed when the block ends."""
    if args.state is None:
        yield None
        return
    try:
        opened = open_store(args.state)
    except ValueError as exc:
        raise CommandError(f"watch: --state: {exc}", EXIT_USAGE) from None
    async with opened:
        shown = redact_url(args.state)
        owner = args.owner or default_owner() if args.replica else None
        # Refuse a store that cannot serve replicas before reading it: reading a
        # SQLite store creates its file.
        replica = _replica_options(opened, args, owner, shown) if owner is not None else {}
        state = WatchStore(shown, await _records(opened, shown), owner=owner)
        state.options = {"state": opened.store, "resume": True, **replica}
        yield state


def _replica_options(
    opened: OpenedStore, args: argparse.Namespace, owner: str, shown: str
) -> dict[str, Any]:
    if opened.gate is None or opened.leases is None:
        raise CommandError(
            f"watch: --replica needs a redis:// --state (replicas share their state, request "
            f"budget and leases through Redis), not {shown}",
            EXIT_USAGE,
        )
    # The budget belongs to the fleet, so it goes to the shared gate; the
    # watcher's own requests_per_second stays unset (it refuses both).
    return {
        "gate": opened.gate(args.rate, args.burst),
        "leases": opened.leases(owner, args.lease or DEFAULT_LEASE_SECONDS),
        "stop_when_done": False,
    }


async def _records(opened: OpenedStore, shown: str) -> list[StoredBatch]:
    """Everything the store holds; a store that cannot be read is one error line."""
    try:
        return await opened.store.load()
    except StateStoreError as exc:
        raise CommandError(
            f"watch: cannot read the state store {shown}: {exc}", EXIT_FAILED
        ) from None
