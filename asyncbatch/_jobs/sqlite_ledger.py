"""`SQLiteLedger`: a job's `Ledger` in one SQLite database.

Tables:

* ``job_meta``: key and value;
* ``job_items``: one row per request, keyed by ``line``, ``custom_id`` unique;
* ``job_batches``: one row per create, ``seq`` its key, ``state`` ``intent``, ``active``
  or ``ended``;
* ``job_attempts``: every attempt of every request, for its history.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``). Calls run on the event
loop's thread: each is one short transaction (a chunk at most), and a job makes a few per
batch and one per delivered outcome.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio

from .._errors import StateStoreError
from .._models import ItemError
from .._stores.sqlite import Synchronous
from .ledger import (
    JOB_CANCELED,
    Intake,
    Intent,
    ItemResult,
    Row,
    Settlement,
    encoded,
    missing,
    settle,
    stored_attempt,
    stored_data,
    stored_error,
)
from .outcome import Attempt, JobOutcome, OutcomeStatus

if sys.platform != "win32":
    import fcntl

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS job_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_items (
    line INTEGER PRIMARY KEY,
    custom_id TEXT UNIQUE,
    request BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting',
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_seq INTEGER,
    batch_id TEXT,
    task_id TEXT,
    data BLOB,
    error BLOB,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS job_items_state ON job_items (state, line);
CREATE INDEX IF NOT EXISTS job_items_batch ON job_items (batch_seq) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS job_items_undelivered ON job_items (line)
    WHERE delivered = 0 AND state IN ('ready', 'failed', 'canceled');
CREATE TABLE IF NOT EXISTS job_batches (
    seq INTEGER PRIMARY KEY,
    batch_id TEXT UNIQUE,
    size INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS job_attempts (
    line INTEGER NOT NULL,
    number INTEGER NOT NULL,
    batch_id TEXT NOT NULL,
    task_id TEXT,
    status TEXT NOT NULL,
    error BLOB,
    PRIMARY KEY (line, number)
) WITHOUT ROWID;
"""
_BUSY_TIMEOUT_MS: Final = 10_000


class SQLiteLedger:
    """A job's `Ledger` in one SQLite database (``":memory:"`` keeps it in this process only).

    Args:
        path: the database file, created if missing.
        synchronous: ``"FULL"`` (each commit on disk before it returns) or ``"NORMAL"``
            (survives a crash of the process, not a power cut).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL") -> None:
        self.path = str(path)
        self._lock: int | None = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._lock = _exclusive(f"{self.path}.lock", self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._unlock()
            raise StateStoreError(f"cannot open the job state {self.path!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<asyncbatch SQLiteLedger {self.path!r}>"

    async def aclose(self) -> None:
        """Close the database and let another process open it. Idempotent."""
        self._db.close()
        self._unlock()

    async def hold(self) -> None:
        """Nothing to renew: the file lock lasts as long as the ledger is open."""
        await anyio.sleep_forever()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # the lock goes with the descriptor

    # -- small state --------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A value of ``job_meta``, or None."""
        row = self._db.execute("SELECT value FROM job_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """Requests by state."""
        rows = self._db.execute("SELECT state, count(*) FROM job_items GROUP BY state")
        return {str(state): int(n) for state, n in rows}

    def totals(self) -> tuple[int, int, int]:
        """``(requests, attempts, delivered)`` over the whole job."""
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(attempts), 0), coalesce(sum(delivered), 0) "
            "FROM job_items"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def batch_count(self, state: str) -> int:
        """Batches in ``state`` (``intent``, ``active`` or ``ended``)."""
        row = self._db.execute("SELECT count(*) FROM job_batches WHERE state = ?", (state,))
        return int(row.fetchone()[0])

    def active_batches(self) -> dict[str, int]:
        """Batch ID to ``seq`` of every batch created and not yet collected."""
        rows = self._db.execute(
            "SELECT batch_id, seq FROM job_batches WHERE state = 'active'"
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def known_batch_ids(self) -> set[str]:
        """Every batch ID this job created."""
        rows = self._db.execute("SELECT batch_id FROM job_batches WHERE batch_id IS NOT NULL")
        return {str(r[0]) for r in rows}

    def open_intents(self) -> list[int]:
        """Intents whose create's outcome is unknown."""
        rows = self._db.execute("SELECT seq FROM job_batches WHERE state = 'intent'").fetchall()
        return [int(r[0]) for r in rows]

    # -- meta and input -----------------------------------------------------------------

    async def set_meta(self, values: dict[str, str]) -> None:
        """Write ``values`` into ``job_meta`` in one transaction."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO job_meta VALUES (?, ?)", values.items())

    @asynccontextmanager
    async def ingesting(self, meta: dict[str, str], limit: int) -> AsyncIterator[Intake]:
        """Store requests in one transaction, then write ``meta``; see `Ledger.ingesting`."""
        with (transaction := self._transaction()) as db:
            intake = Intake(lambda rows: self._store_rows(db, rows), limit)
            yield intake
            await intake.close()
            transaction.discard = bool(intake.problems)
            db.executemany("INSERT OR REPLACE INTO job_meta VALUES (?, ?)", meta.items())

    async def _store_rows(self, db: sqlite3.Connection, rows: list[Row]) -> list[str]:
        problems = []
        for line, custom_id, request in rows:
            try:
                db.execute(
                    "INSERT INTO job_items (line, custom_id, request) VALUES (?, ?, ?)",
                    (line, custom_id, request),
                )
            except sqlite3.IntegrityError:
                first = db.execute(
                    "SELECT line FROM job_items WHERE custom_id = ?", (custom_id,)
                ).fetchone()
                where = f"line {first[0]}" if first else "an earlier line"
                problems.append(f"line {line}: custom_id {custom_id!r} repeats {where}")
        return problems

    # -- intents and batches ------------------------------------------------------------

    async def new_intent(self, size: int) -> Intent:
        """Take up to ``size`` waiting requests (first lines first) into a new intent."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT line, request FROM job_items WHERE state = 'waiting' ORDER BY line LIMIT ?",
                (size,),
            ).fetchall()
            cursor = db.execute(
                "INSERT INTO job_batches (size, state) VALUES (?, 'intent')", (len(rows),)
            )
            seq = int(cursor.lastrowid or 0)
            db.executemany(
                "UPDATE job_items SET state = 'running', batch_seq = ?, batch_id = NULL "
                "WHERE line = ?",
                [(seq, row[0]) for row in rows],
            )
        return Intent(seq, [int(r[0]) for r in rows], [bytes(r[1]) for r in rows])

    async def intent(self, seq: int) -> Intent:
        """The items of intent (or batch) ``seq`` still running in it."""
        return self._intent(seq)

    def _intent(self, seq: int) -> Intent:
        rows = self._db.execute(
            "SELECT line, request FROM job_items WHERE state = 'running' AND batch_seq = ? "
            "ORDER BY line",
            (seq,),
        ).fetchall()
        return Intent(seq, [int(r[0]) for r in rows], [bytes(r[1]) for r in rows])

    async def created(self, seq: int, batch_id: str) -> None:
        """Record that intent ``seq`` became batch ``batch_id``."""
        with self._transaction() as db:
            db.execute(
                "UPDATE job_batches SET batch_id = ?, state = 'active' WHERE seq = ?",
                (batch_id, seq),
            )
            db.execute(
                "UPDATE job_items SET batch_id = ? WHERE state = 'running' AND batch_seq = ?",
                (batch_id, seq),
            )

    async def void_intent(self, seq: int) -> None:
        """Intent ``seq`` made no batch: its requests wait again, no attempt counted."""
        with self._transaction() as db:
            db.execute(
                "UPDATE job_items SET state = 'waiting', batch_seq = NULL "
                "WHERE state = 'running' AND batch_seq = ?",
                (seq,),
            )
            db.execute("DELETE FROM job_batches WHERE seq = ?", (seq,))

    # -- results ------------------------------------------------------------------------

    async def apply_results(
        self,
        seq: int,
        batch_id: str,
        results: Sequence[ItemResult],
        *,
        batch_status: str,
        max_attempts: int,
        canceling: bool,
    ) -> int:
        """Settle the items of batch ``seq`` that ``results`` name; see `Ledger.apply_results`."""
        with self._transaction() as db:
            return _apply(
                db,
                seq,
                batch_id,
                results,
                batch_status=batch_status,
                max_attempts=max_attempts,
                canceling=canceling,
            )

    async def end_batch(
        self, seq: int, batch_id: str, *, batch_status: str, max_attempts: int, canceling: bool
    ) -> int:
        """Mark batch ``seq`` ended, settling what its results left; one transaction."""
        with self._transaction() as db:
            left = missing(self._intent(seq).lines)
            changed = _apply(
                db,
                seq,
                batch_id,
                left,
                batch_status=batch_status,
                max_attempts=max_attempts,
                canceling=canceling,
            )
            db.execute("UPDATE job_batches SET state = 'ended' WHERE seq = ?", (seq,))
        return changed

    async def refuse(self, lines: Sequence[int], error: ItemError) -> None:
        """The API refused these requests outright: final ``failed``, one attempt counted."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE job_items SET state = 'failed', attempts = attempts + 1, "
                "batch_seq = NULL, error = ? WHERE line = ? AND state != 'ready'",
                [(encoded(error), line) for line in lines],
            )

    async def cancel_waiting(self) -> int:
        """End every waiting request as ``canceled``; returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE job_items SET state = 'canceled', error = ? WHERE state = 'waiting'",
                (encoded(JOB_CANCELED),),
            )
        return cursor.rowcount

    # -- delivery -----------------------------------------------------------------------

    async def undelivered(self, limit: int) -> list[JobOutcome]:
        """Up to ``limit`` final outcomes not yet acknowledged, first lines first."""
        rows = self._db.execute(
            "SELECT line, custom_id, state, data, error, attempts, batch_id, task_id "
            "FROM job_items WHERE delivered = 0 AND state IN ('ready', 'failed', 'canceled') "
            "ORDER BY line LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._outcome(row) for row in rows]

    async def acknowledge(self, line: int) -> None:
        """Mark the outcome of ``line`` delivered (committed when this returns)."""
        with self._transaction() as db:
            db.execute("UPDATE job_items SET delivered = 1 WHERE line = ?", (line,))

    async def redeliver_all_but(self, lines: Iterable[int]) -> None:
        """Make every final outcome undelivered except those of ``lines``."""
        with self._transaction() as db:
            db.execute("UPDATE job_items SET delivered = 0")
            db.executemany(
                "UPDATE job_items SET delivered = 1 WHERE line = ?", ((n,) for n in lines)
            )

    def _history(self, line: int) -> tuple[Attempt, ...]:
        rows = self._db.execute(
            "SELECT number, batch_id, status, task_id, error FROM job_attempts "
            "WHERE line = ? ORDER BY number",
            (line,),
        ).fetchall()
        return tuple(
            stored_attempt(int(r[0]), str(r[1]), str(r[2]), r[3], _bytes(r[4])) for r in rows
        )

    def _outcome(self, row: tuple[Any, ...]) -> JobOutcome:
        line, custom_id, state, data, error, attempts, batch_id, task_id = row
        number = int(line)
        return JobOutcome(
            line=number,
            custom_id=None if custom_id is None else str(custom_id),
            status=OutcomeStatus(str(state)),
            data=stored_data(_bytes(data)),
            error=stored_error(_bytes(error)),
            attempts=int(attempts),
            batch_id=None if batch_id is None else str(batch_id),
            task_id=None if task_id is None else str(task_id),
            history=self._history(number),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def _exclusive(lock_path: str, shown: str) -> int | None:
    """An open descriptor of ``lock_path`` holding its exclusive lock, so that one process at
    a time carries the job (two would each deliver every outcome). The system drops the lock
    when the process ends however it ends, so a killed run never blocks the next one. (None
    on Windows, which has no ``flock``: there nothing stops a second process.)"""
    if sys.platform == "win32":
        return None
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise StateStoreError(
            f"the job state {shown!r} is in use by another process: one process carries a "
            "job at a time (stop the other one first)"
        ) from None
    return descriptor


def _bytes(value: object) -> bytes | None:
    return None if value is None else bytes(value)  # type: ignore[call-overload]


def _apply(
    db: sqlite3.Connection,
    seq: int,
    batch_id: str,
    results: Sequence[ItemResult],
    *,
    batch_status: str,
    max_attempts: int,
    canceling: bool,
) -> int:
    changed = 0
    for result in results:
        row = db.execute(
            "SELECT attempts FROM job_items WHERE line = ? AND state = 'running' AND batch_seq = ?",
            (result.line, seq),
        ).fetchone()
        if row is None:
            continue
        attempts = int(row[0]) + 1
        outcome = settle(
            result.status,
            batch_status=batch_status,
            attempts=attempts,
            max_attempts=max_attempts,
            canceling=canceling,
            error=result.error,
        )
        _settle_item(db, result, batch_id, attempts, outcome)
        changed += 1
    return changed


def _settle_item(
    db: sqlite3.Connection, result: ItemResult, batch_id: str, attempts: int, outcome: Settlement
) -> None:
    error, data = encoded(outcome.error), encoded(result.data)
    db.execute(
        "UPDATE job_items SET state = ?, attempts = ?, batch_id = ?, task_id = ?, data = ?, "
        "error = ?, batch_seq = NULL WHERE line = ?",
        (outcome.state, attempts, batch_id, result.task_id, data, error, result.line),
    )
    db.execute(
        "INSERT OR REPLACE INTO job_attempts VALUES (?, ?, ?, ?, ?, ?)",
        (result.line, attempts, batch_id, result.task_id, result.status, error),
    )


class _Transaction:
    """``with`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception, or
    when ``discard`` was set inside."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._path = path
        self.discard = False

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("ROLLBACK" if self.discard else "COMMIT")
            return
        self._db.execute("ROLLBACK")
        if issubclass(exc_type, sqlite3.Error):
            raise StateStoreError(f"the job state {self._path!r} failed: {exc}") from None
