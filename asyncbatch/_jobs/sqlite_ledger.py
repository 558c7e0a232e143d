"""`Ledger`: a job's durable record in SQLite: requests, intents, batches, attempts, deliveries.

Tables:

* ``job_meta``: the job's tag (the prefix of every custom ID it sends), its options, and
  whether its input was read to the end;
* ``job_items``: one row per request, keyed by its 1-based position (``line``), with the
  caller's ``custom_id`` (unique), the request as sent (without a custom ID), its state
  (``waiting``, ``running``, or final ``ready``, ``failed``, ``canceled``), attempts, the
  batch of its current or last attempt, its result, and whether its outcome was delivered;
* ``job_batches``: one row per create: the ``intent`` (written and committed before the
  create is sent), then the batch ID (``active``), then ``ended`` once its results are in;
* ``job_attempts``: every attempt of every request, for its history.

Every change is one transaction, so a crash at any moment leaves a state a restart can
continue from: an intent without a batch ID is a create whose outcome is unknown (the job
looks for its orphan before doing anything else), and results are applied only to items
still ``running`` in that batch, so collecting a batch twice changes nothing.

Calls run on the event loop's thread: each is one short transaction (a chunk at most), and
the job makes a few per batch and one per delivered outcome.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from .._errors import StateStoreError
from .._models import ItemError, TaskResult
from .outcome import Attempt, JobOutcome, OutcomeStatus

WAITING: Final = "waiting"
RUNNING: Final = "running"

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
_error_decoder = msgspec.json.Decoder(ItemError)
_data_decoder = msgspec.json.Decoder(TaskResult)
_encoder = msgspec.json.Encoder()

Synchronous = Literal["FULL", "NORMAL"]
Row = tuple[int, str | None, bytes]
"""A request as stored: its line, the caller's custom ID, and the request JSON without it."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A create about to be sent (or sent, with its outcome unknown): its items."""

    seq: int
    lines: list[int]
    requests: list[bytes]

    def pairs(self) -> Iterator[tuple[int, bytes]]:
        """``(line, request)`` of each item."""
        return zip(self.lines, self.requests, strict=True)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One results line of a batch, as the ledger applies it."""

    line: int
    status: str
    task_id: str | None
    data: TaskResult | None
    error: ItemError | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """What ending a batch's attempt means for an item: its next state, and why."""

    state: str
    error: ItemError | None


def settle(
    status: str,
    *,
    batch_status: str,
    attempts: int,
    max_attempts: int,
    canceling: bool,
    error: ItemError | None,
) -> Settlement:
    """The next state of an item whose attempt (number ``attempts``) ended as ``status``.

    ``ready`` is final. A job being canceled ends everything else (``failed`` if that was
    its last attempt anyway, else ``canceled``). An item canceled in a batch canceled by
    someone else stays canceled. Everything else (``failed``, canceled by expiry, or
    left unfinished or missing in an ended batch) goes round again until ``max_attempts``.
    """
    if status == OutcomeStatus.READY:
        return Settlement(OutcomeStatus.READY, None)
    exhausted = attempts >= max_attempts
    if status == OutcomeStatus.CANCELED and not canceling and batch_status == "canceled":
        return Settlement(OutcomeStatus.CANCELED, error or _CANCELED)
    if status == OutcomeStatus.CANCELED and batch_status == "expired":
        error = error or _EXPIRED
    elif status not in (OutcomeStatus.FAILED, OutcomeStatus.CANCELED):
        error = error or ItemError(message=f"left {status} when batch ended {batch_status}")
    if canceling:
        failed = exhausted and status == OutcomeStatus.FAILED
        return Settlement(
            OutcomeStatus.FAILED if failed else OutcomeStatus.CANCELED, error or JOB_CANCELED
        )
    return Settlement(OutcomeStatus.FAILED if exhausted else WAITING, error)


_CANCELED = ItemError(message="the batch was canceled", code="batch_canceled")
_EXPIRED = ItemError(message="unfinished when the batch expired", code="batch_expired")
JOB_CANCELED = ItemError(message="the job was canceled", code="job_canceled")


class Ledger:
    """A job's record in one SQLite database (``":memory:"`` keeps it in this process only).

    Args:
        path: the database file, created if missing.
        synchronous: ``"FULL"`` (each commit on disk before it returns) or ``"NORMAL"``
            (survives a crash of the process, not a power cut).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open the job state {self.path!r}: {exc}") from exc

    def close(self) -> None:
        """Close the database. Idempotent."""
        self._db.close()

    # -- meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A value of ``job_meta``, or None."""
        row = self._db.execute("SELECT value FROM job_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, values: dict[str, str]) -> None:
        """Write ``values`` into ``job_meta`` in one transaction."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO job_meta VALUES (?, ?)", values.items())

    # -- input --------------------------------------------------------------------------

    @contextmanager
    def ingesting(self, meta: dict[str, str], limit: int) -> Iterator[Intake]:
        """Insert requests (`Intake.add`) in one transaction, then mark the input read.

        With any problem in `Intake.problems` at the end, nothing is kept. An exception
        inside the block keeps nothing either.
        """
        with self._transaction() as db:
            intake = Intake(db, limit)
            yield intake
            if intake.problems:
                raise _Rollback
            db.executemany("INSERT OR REPLACE INTO job_meta VALUES (?, ?)", meta.items())

    # -- intents and batches --------------------------------------------------------------

    def new_intent(self, size: int) -> Intent:
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

    def intent(self, seq: int) -> Intent:
        """The items of intent (or batch) ``seq`` still running in it."""
        rows = self._db.execute(
            "SELECT line, request FROM job_items WHERE state = 'running' AND batch_seq = ? "
            "ORDER BY line",
            (seq,),
        ).fetchall()
        return Intent(seq, [int(r[0]) for r in rows], [bytes(r[1]) for r in rows])

    def created(self, seq: int, batch_id: str) -> None:
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

    def void_intent(self, seq: int) -> None:
        """Intent ``seq`` made no batch: its requests wait again, no attempt counted."""
        with self._transaction() as db:
            db.execute(
                "UPDATE job_items SET state = 'waiting', batch_seq = NULL "
                "WHERE state = 'running' AND batch_seq = ?",
                (seq,),
            )
            db.execute("DELETE FROM job_batches WHERE seq = ?", (seq,))

    def open_intents(self) -> list[int]:
        """Intents whose create's outcome is unknown (a crash came between the two records)."""
        rows = self._db.execute("SELECT seq FROM job_batches WHERE state = 'intent'").fetchall()
        return [int(r[0]) for r in rows]

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

    def batch_count(self, state: str) -> int:
        """Batches in ``state`` (``intent``, ``active`` or ``ended``)."""
        row = self._db.execute("SELECT count(*) FROM job_batches WHERE state = ?", (state,))
        return int(row.fetchone()[0])

    # -- results ------------------------------------------------------------------------

    def apply_results(
        self,
        seq: int,
        batch_id: str,
        results: Sequence[ItemResult],
        *,
        batch_status: str,
        max_attempts: int,
        canceling: bool,
    ) -> int:
        """Settle the items of batch ``seq`` that ``results`` name; returns how many changed.

        Only items still running in that batch change, so applying twice is harmless.
        """
        changed = 0
        with self._transaction() as db:
            for result in results:
                row = db.execute(
                    "SELECT attempts FROM job_items WHERE line = ? AND state = 'running' "
                    "AND batch_seq = ?",
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

    def end_batch(
        self, seq: int, batch_id: str, *, batch_status: str, max_attempts: int, canceling: bool
    ) -> int:
        """Mark batch ``seq`` collected; items its results did not settle go round again."""
        left = [
            ItemResult(line=line, status="missing", task_id=None, data=None, error=None)
            for line in self.intent(seq).lines
        ]
        changed = self.apply_results(
            seq,
            batch_id,
            left,
            batch_status=batch_status,
            max_attempts=max_attempts,
            canceling=canceling,
        )
        with self._transaction() as db:
            db.execute("UPDATE job_batches SET state = 'ended' WHERE seq = ?", (seq,))
        return changed

    def refuse(self, lines: Sequence[int], error: ItemError) -> None:
        """The API refused these requests outright: final ``failed``, one attempt counted."""
        with self._transaction() as db:
            for line in lines:
                db.execute(
                    "UPDATE job_items SET state = 'failed', attempts = attempts + 1, "
                    "batch_seq = NULL, error = ? WHERE line = ? AND state != 'ready'",
                    (_encoder.encode(error), line),
                )

    def cancel_waiting(self) -> int:
        """End every waiting request as ``canceled``; returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE job_items SET state = 'canceled', error = ? WHERE state = 'waiting'",
                (_encoder.encode(JOB_CANCELED),),
            )
        return cursor.rowcount

    # -- counts and delivery ----------------------------------------------------------

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

    def undelivered(self, limit: int, exclude: int | None = None) -> list[JobOutcome]:
        """Up to ``limit`` final outcomes not yet acknowledged, first lines first."""
        rows = self._db.execute(
            "SELECT line, custom_id, state, data, error, attempts, batch_id, task_id "
            "FROM job_items WHERE delivered = 0 AND state IN ('ready', 'failed', 'canceled') "
            "AND line != ? "
            "ORDER BY line LIMIT ?",
            (-1 if exclude is None else exclude, limit),
        ).fetchall()
        return [self._outcome(row) for row in rows]

    def acknowledge(self, line: int) -> None:
        """Mark the outcome of ``line`` delivered (committed when this returns)."""
        with self._transaction() as db:
            db.execute("UPDATE job_items SET delivered = 1 WHERE line = ?", (line,))

    def redeliver_all_but(self, lines: Iterable[int]) -> None:
        """Make every final outcome undelivered except those of ``lines`` (an output file's)."""
        with self._transaction() as db:
            db.execute("UPDATE job_items SET delivered = 0")
            db.executemany(
                "UPDATE job_items SET delivered = 1 WHERE line = ?", ((n,) for n in lines)
            )

    def history(self, line: int) -> tuple[Attempt, ...]:
        """Every attempt of ``line``, oldest first."""
        rows = self._db.execute(
            "SELECT number, batch_id, status, task_id, error FROM job_attempts "
            "WHERE line = ? ORDER BY number",
            (line,),
        ).fetchall()
        return tuple(
            Attempt(
                number=int(r[0]),
                batch_id=str(r[1]),
                status=str(r[2]),
                task_id=r[3],
                error=None if r[4] is None else _error_decoder.decode(r[4]),
            )
            for r in rows
        )

    def _outcome(self, row: tuple[Any, ...]) -> JobOutcome:
        line, custom_id, state, data, error, attempts, batch_id, task_id = row
        number = int(line)
        return JobOutcome(
            line=number,
            custom_id=None if custom_id is None else str(custom_id),
            status=OutcomeStatus(str(state)),
            data=None if data is None else _data_decoder.decode(bytes(data)),
            error=None if error is None else _error_decoder.decode(bytes(error)),
            attempts=int(attempts),
            batch_id=None if batch_id is None else str(batch_id),
            task_id=None if task_id is None else str(task_id),
            history=self.history(number),
        )

    # -- plumbing -----------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


def _settle_item(
    db: sqlite3.Connection, result: ItemResult, batch_id: str, attempts: int, outcome: Settlement
) -> None:
    error = None if outcome.error is None else _encoder.encode(outcome.error)
    data = None if result.data is None else _encoder.encode(result.data)
    db.execute(
        "UPDATE job_items SET state = ?, attempts = ?, batch_id = ?, task_id = ?, data = ?, "
        "error = ?, batch_seq = NULL WHERE line = ?",
        (outcome.state, attempts, batch_id, result.task_id, data, error, result.line),
    )
    db.execute(
        "INSERT OR REPLACE INTO job_attempts VALUES (?, ?, ?, ?, ?, ?)",
        (result.line, attempts, batch_id, result.task_id, result.status, error),
    )


class Intake:
    """Requests going into the ledger; collects the problems (at most ``limit``)."""

    def __init__(self, db: sqlite3.Connection, limit: int) -> None:
        self._db = db
        self._limit = limit
        self.problems: list[str] = []
        self.count = 0

    @property
    def full(self) -> bool:
        """Enough problems were found: reading further would only add to the list."""
        return len(self.problems) >= self._limit

    def add(self, row: Row | str) -> None:
        """Store a request, or note a problem (a string) found in the input."""
        if isinstance(row, str):
            self.problems.append(row)
            return
        line, custom_id, request = row
        try:
            self._db.execute(
                "INSERT INTO job_items (line, custom_id, request) VALUES (?, ?, ?)",
                (line, custom_id, request),
            )
        except sqlite3.IntegrityError:
            first = self._db.execute(
                "SELECT line FROM job_items WHERE custom_id = ?", (custom_id,)
            ).fetchone()
            where = f"line {first[0]}" if first else "an earlier line"
            self.problems.append(f"line {line}: custom_id {custom_id!r} repeats {where}")
            return
        self.count += 1


class _Rollback(Exception):
    """Raised inside a transaction to undo it quietly."""


class _Transaction:
    """``with`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> bool:
        if exc_type is None:
            self._db.execute("COMMIT")
            return False
        self._db.execute("ROLLBACK")
        if exc_type is _Rollback:
            return True
        if issubclass(exc_type, sqlite3.Error):
            raise StateStoreError(f"the job state {self._path!r} failed: {exc}") from None
        return False
