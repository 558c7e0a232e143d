"""`SQLiteStore`: watch state in one SQLite file, for a watcher that must survive restarts.

One table, one row per batch: the batch ID and the msgspec-encoded
`StoredBatch`. The database runs in WAL mode, so a reader (another process
inspecting the file) never blocks the watcher's writes.

SQLite calls block, so none runs on the event loop: each goes to a worker
thread (`anyio.to_thread.run_sync`), one at a time, through a single
connection. An acknowledgement reads the kept record and writes the new one in
one ``BEGIN IMMEDIATE`` transaction, so the "never backwards" rule of
`StoredBatch.supersedes` holds even when several processes share the file.

Durability: ``synchronous="FULL"`` (the default) syncs the WAL on every
commit, so an acknowledged event survives a power cut; ``"NORMAL"`` is faster
and still survives a crash of the process, but a power cut may undo the last
acknowledgements (those events would then be delivered again).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Literal, Self, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import AsyncResource

from .._errors import StateStoreError
from .memory import StoredBatch, decode_record, encode_record

_T = TypeVar("_T")

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS asyncbatch_batches "
    "(batch_id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID"
)
_BUSY_TIMEOUT_MS: Final = 10_000  # another process holding the write lock: wait, don't fail

Synchronous = Literal["FULL", "NORMAL"]


def sqlite_url_parts(
    netloc: str, path: str, query: dict[str, list[str]]
) -> tuple[str, Synchronous]:
    """The file and ``synchronous`` mode of a ``sqlite:///PATH[?synchronous=NORMAL]`` URL's
    parts (``urlsplit``, query by ``parse_qs``); `ValueError` if malformed. One reading of the
    form for the watch state and the job state."""
    # sqlite:///rel.db has path "/rel.db"; sqlite:////abs.db has "//abs.db".
    if netloc or len(path) < 2:
        raise ValueError("a SQLite state URL is sqlite:///relative.db or sqlite:////absolute.db")
    synchronous = query.get("synchronous", ["FULL"])[-1].upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError("sqlite state: synchronous must be FULL or NORMAL")
    return path[1:], "NORMAL" if synchronous == "NORMAL" else "FULL"


class SQLiteStore(AsyncResource):
    """A `StateStore` in a SQLite database file (created if missing).

    Args:
        path: the database file; several processes may share it.
        synchronous: ``"FULL"`` (every acknowledgement on disk before it
            returns) or ``"NORMAL"`` (faster; survives process crashes only).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        # One connection, used from one worker thread at a time.
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<asyncbatch.SQLiteStore {str(self.path)!r}>"

    async def __aenter__(self) -> Self:
        await self._call(lambda _: None)  # open now, so a bad path fails here
        return self

    async def load(self) -> list[StoredBatch]:
        rows = await self._call(
            lambda db: db.execute("SELECT record FROM asyncbatch_batches").fetchall()
        )
        return [decode_record(row[0]) for row in rows]

    async def track(self, batch_ids: Iterable[str]) -> None:
        rows = [(b, encode_record(StoredBatch(batch_id=b))) for b in dict.fromkeys(batch_ids)]
        if rows:
            await self._call(lambda db: _write(db, _insert_missing, rows))

    async def acknowledge(self, record: StoredBatch) -> None:
        await self._call(lambda db: _write(db, _acknowledge, record))

    async def forget(self, batch_id: str) -> None:
        await self._call(
            lambda db: db.execute("DELETE FROM asyncbatch_batches WHERE batch_id = ?", (batch_id,))
        )

    async def aclose(self) -> None:
        """Close the connection; later calls raise `RuntimeError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._limiter:
            connection, self._connection = self._connection, None
            if connection is not None:
                await anyio.to_thread.run_sync(connection.close)

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the connection in a worker thread, one call at a time."""
        async with self._limiter:
            if self._closed:
                raise RuntimeError("this SQLiteStore is closed")
            try:
                return await anyio.to_thread.run_sync(self._run, work)
            except (sqlite3.Error, OSError) as exc:
                raise StateStoreError(f"SQLite state store {self.path}: {exc}") from exc

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._connection is None:
            self._connection = _connect(self.path, self._synchronous)
        return work(self._connection)


def _connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    # Autocommit mode: transactions are the explicit BEGIN IMMEDIATE of `_write`.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def _write(
    db: sqlite3.Connection, change: Callable[[sqlite3.Connection, _T], None], arg: _T
) -> None:
    """Apply ``change`` in one write transaction: the read inside it sees what it overwrites."""
    db.execute("BEGIN IMMEDIATE")
    try:
        change(db, arg)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _insert_missing(db: sqlite3.Connection, rows: list[tuple[str, bytes]]) -> None:
    db.executemany("INSERT OR IGNORE INTO asyncbatch_batches VALUES (?, ?)", rows)


def _acknowledge(db: sqlite3.Connection, record: StoredBatch) -> None:
    row = db.execute(
        "SELECT record FROM asyncbatch_batches WHERE batch_id = ?", (record.batch_id,)
    ).fetchone()
    if row is None or record.supersedes(decode_record(row[0])):
        db.execute(
            "INSERT OR REPLACE INTO asyncbatch_batches VALUES (?, ?)",
            (record.batch_id, encode_record(record)),
        )
