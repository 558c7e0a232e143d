"""Where a watcher keeps what its consumer has acknowledged, so a restart loses nothing.

A `StateStore` holds one `StoredBatch` per watched batch: the last snapshot the
consumer acknowledged, and whether that was the batch's final event. A watcher
with a store writes a batch when it starts watching it and again on each
acknowledgement; a restarted watcher reads the store back and diffs the next
snapshot against the acknowledged one. Hence:

* an event that was delivered but not acknowledged before a crash is reported
  again (the change it described shows up in the diff, possibly merged with
  later changes into one event);
* whatever changed while no watcher ran is reported, a completion included;
* an acknowledged final event never comes again.

Stores are small: `MemoryStore` here; SQLite and Redis stores implement the
same protocol. Records are msgspec structs, so a store can keep them as bytes
with `encode_record` / `decode_record`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import msgspec
from anyio.abc import AsyncResource

from .._events import is_stale
from .._models import Batch, decode_body


class StoredBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A watched batch as its consumer last acknowledged it."""

    batch_id: str
    snapshot: Batch | None = None
    final: bool = False

    def supersedes(self, other: StoredBatch) -> bool:
        """Whether this record may replace ``other``: acknowledgements never go backwards."""
        if other.final:
            return False
        if self.final or other.snapshot is None:
            return True
        return self.snapshot is not None and not is_stale(other.snapshot, self.snapshot)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredBatch)


def encode_record(record: StoredBatch) -> bytes:
    """A record as JSON bytes."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> StoredBatch:
    """A record back from `encode_record` bytes; `DecodeError` when they are not one."""
    return decode_body(_decoder, data, "stored watch record")


@runtime_checkable
class StateStore(Protocol):
    """Durable per-batch watch state. Each method may be called from the event loop only."""

    async def load(self) -> list[StoredBatch]:
        """Every record kept."""
        ...

    async def track(self, batch_ids: Iterable[str]) -> None:
        """Remember batches being watched; existing records stay as they are."""
        ...

    async def acknowledge(self, record: StoredBatch) -> None:
        """Store ``record`` unless the kept one supersedes it (see `StoredBatch.supersedes`)."""
        ...

    async def forget(self, batch_id: str) -> None:
        """Drop a batch's record (it was discarded)."""
        ...

    async def aclose(self) -> None:
        """Release connections or files."""
        ...


class MemoryStore(AsyncResource):
    """A `StateStore` in a dict: survives a watcher, not the process."""

    def __init__(self) -> None:
        self._records: dict[str, StoredBatch] = {}

    def __repr__(self) -> str:
        return f"<asyncbatch.MemoryStore records={len(self._records)}>"

    async def load(self) -> list[StoredBatch]:
        return list(self._records.values())

    async def track(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            self._records.setdefault(batch_id, StoredBatch(batch_id=batch_id))

    async def acknowledge(self, record: StoredBatch) -> None:
        kept = self._records.get(record.batch_id)
        if kept is None or record.supersedes(kept):
            self._records[record.batch_id] = record

    async def forget(self, batch_id: str) -> None:
        self._records.pop(batch_id, None)

    async def aclose(self) -> None:
        """Nothing to release (``async with MemoryStore() as store:`` works, as for any store)."""
