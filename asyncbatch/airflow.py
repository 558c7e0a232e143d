"""Apache Airflow: a deferrable trigger and operators (``pip install 'asyncbatch[airflow]'``).

The parts, and where each runs:

- `TwelveLabsBatchTrigger` runs in the triggerer, on the loop it shares with every other trigger.
  It watches batch IDs with the watcher and yields one `TriggerEvent` once all have ended; it
  creates nothing, so a triggerer restart (a new trigger built from `serialize`) only watches
  again. Its arguments hold IDs, the connection ID, polling options and an absolute end time,
  never the key: the key is read from the connection with ``await BaseHook.aget_connection``.
- `TwelveLabsBatchOperator` runs on a worker: it creates one batch, defers on the trigger (no
  worker slot is held while the batch runs) and, back on a worker, writes the results to a path
  and returns a summary as its XCom. The batch ID is kept in an Airflow Variable until the task
  succeeds, so a retried task re-attaches to its batch instead of creating a twin.
- `TwelveLabsBatchSensor` waits for batches created elsewhere, deferring from the start.
- `TwelveLabsJobOperator` runs a job (any number of requests, in as many batches as it takes)
  in waves (`Job.advance`): each wave collects the job's ended batches and fills the free slots
  on a worker, then the task defers on the trigger (``wait_for="any"``) until one of its batches
  ends. Its state is a SQLite file at a path derived from the task instance (on storage every
  worker reaches), so the next wave, or a retried task, resumes the job instead of starting it
  again. ``deferrable=False`` runs the whole job on one worker instead.

The connection (``twelvelabs_default`` unless told): password = API key, host = base URL, e.g.
``AIRFLOW_CONN_TWELVELABS_DEFAULT='{"conn_type": "generic", "password": "<key>"}'``; without a
host the client's default (``$TWELVELABS_BASE_URL``, then the public API) applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import msgspec

try:
    from airflow.sdk import BaseHook, BaseOperator, Context, ObjectStoragePath, Variable
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from airflow.triggers.base import BaseTrigger, TriggerEvent
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "asyncbatch.airflow needs Apache Airflow 3.1 or later: pip install 'asyncbatch[airflow]'"
    ) from exc

from ._client import Client
from ._errors import ConfigurationError, ConflictError, InvalidRequestError, NotFoundError
from ._events import Event
from ._jobs import Job, JobStatistics, OutcomeStatus, check_limits
from ._jobs.output import deliver, has_job, written_lines
from ._jobs.runner import DEFAULT_POLL
from ._models import Batch, BatchDefaults, BatchItemRequest, check_batch_id, check_not_a_string
from ._redact import redact_url
from ._retry import PollPolicy

__all__ = [
    "DEFAULT_CONN_ID",
    "TwelveLabsBatchError",
    "TwelveLabsBatchOperator",
    "TwelveLabsBatchSensor",
    "TwelveLabsBatchTrigger",
    "TwelveLabsJobError",
    "TwelveLabsJobOperator",
    "client_from_connection",
]

DEFAULT_CONN_ID = "twelvelabs_default"
_COUNTERS = (
    "total_items",
    "queued_items",
    "processing_items",
    "ready_items",
    "failed_items",
    "canceled_items",
)


class TwelveLabsBatchError(AirflowException):
    """A watched batch did not complete: canceled, expired, gone, or the watch gave up."""


class TwelveLabsJobError(AirflowFailException):
    """A job ended with requests that are not ready (``fail_on_failed_items``).

    Final, so the task is not retried: a retry would resume the same finished job.
    """


class TwelveLabsJobStopped(AirflowException):
    """The job was stopped (``on_kill``) before it ended; a retry resumes it."""


async def client_from_connection(conn_id: str = DEFAULT_CONN_ID) -> Client:
    """A `Client` from the Airflow connection ``conn_id`` (password = key, host = base URL).

    Reads the connection with ``await BaseHook.aget_connection``, so it never blocks the loop.
    """
    connection = await BaseHook.aget_connection(conn_id)
    return _client(conn_id, connection.password, connection.host)


def _client(conn_id: str, password: str | None, host: str | None) -> Client:
    if not password:
        raise ConfigurationError(
            f"the Airflow connection {conn_id!r} has no password: put the TwelveLabs API key there"
        )
    return Client(api_key=password, base_url=host or None)


def _worker_credentials(conn_id: str) -> tuple[str | None, str | None]:
    """The connection's password and host, read on a worker (blocking, so outside any loop)."""
    connection = BaseHook.get_connection(conn_id)
    return connection.password, connection.host


def _summary(batch: Batch | None) -> dict[str, Any]:
    if batch is None:
        return {"status": None, **dict.fromkeys(_COUNTERS, 0)}
    return {"status": batch.status, **{name: getattr(batch, name) for name in _COUNTERS}}


def _outcome(event: Event) -> dict[str, Any]:
    """A final event as plain JSON data: its kind, the last status and counters, any error."""
    error = None
    if event.error is not None:
        error = {"type": type(event.error).__name__, "message": str(event.error)}
    return {
        "batch_id": event.batch_id,
        "event": str(event.kind),
        **_summary(event.batch),
        "error": error,
    }


def _completed(outcome: Mapping[str, Any]) -> bool:
    return bool(outcome["event"] == "done" and outcome["status"] == "completed")


class TwelveLabsBatchTrigger(BaseTrigger):
    """Watches ``batch_ids`` and fires one event when every one has ended (``wait_for="all"``)
    or as soon as any one has (``wait_for="any"``: the payload then holds only the batches that
    had ended).

    The event's payload is plain JSON: ``{"batches": {id: {"batch_id", "event", "status",
    <counters>, "error"}}, "completed": bool}``, where ``event`` is the watcher's final event kind
    (``done``, ``gone`` or ``error``), ``error`` is None or ``{"type", "message"}``, and
    ``completed`` says every batch ended ``completed``.

    Args:
        batch_ids: the batches to watch (24 hex digits each).
        conn_id: the Airflow connection holding the key (password) and base URL (host).
        end_time: Unix time after which batches still running get an ``error`` outcome; absolute,
            so that a trigger re-created after a triggerer restart keeps the same deadline.
        min_interval, max_interval: polling bounds, seconds (the watcher's defaults if None).
        cancel_on_kill: cancel the batches when a user kills the deferred task.
        wait_for: ``"all"`` (the default) or ``"any"``.
    """

    def __init__(
        self,
        batch_ids: Sequence[str],
        *,
        conn_id: str = DEFAULT_CONN_ID,
        end_time: float | None = None,
        min_interval: float | None = None,
        max_interval: float | None = None,
        cancel_on_kill: bool = False,
        wait_for: str = "all",
    ) -> None:
        super().__init__()
        if wait_for not in ("all", "any"):
            raise ValueError(f'wait_for is "all" or "any", not {wait_for!r}')
        check_not_a_string(batch_ids, "batch_ids")
        self.batch_ids = [check_batch_id(batch_id) for batch_id in batch_ids]
        if not self.batch_ids:
            raise ValueError("batch_ids is empty: give at least one batch to watch")
        self.conn_id = conn_id
        self.end_time = end_time
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.cancel_on_kill = cancel_on_kill
        self.wait_for = wait_for

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the arguments that rebuild this trigger; never the key."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": list(self.batch_ids),
                "conn_id": self.conn_id,
                "end_time": self.end_time,
                "min_interval": self.min_interval,
                "max_interval": self.max_interval,
                "cancel_on_kill": self.cancel_on_kill,
                "wait_for": self.wait_for,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Watch until every batch (or, with ``wait_for="any"``, one) has ended, or until
        ``end_time``, then yield one event."""
        outcomes: dict[str, dict[str, Any]] = {}
        try:
            async with await client_from_connection(self.conn_id) as client:
                outcomes = await self._watch(client)
        except Exception as exc:  # the task must hear of it, not the triggerer
            # Outcomes already known stand; the rest share the failure (e.g. no connection).
            error = {"type": type(exc).__name__, "message": str(exc)}
            for batch_id in self.batch_ids:
                outcomes.setdefault(
                    batch_id,
                    {"batch_id": batch_id, "event": "error", **_summary(None), "error": error},
                )
        completed = all(
            o["event"] == "done" and o["status"] == "completed" for o in outcomes.values()
        )
        yield TriggerEvent({"batches": outcomes, "completed": completed})

    async def _watch(self, client: Client) -> dict[str, dict[str, Any]]:
        timeout = None if self.end_time is None else max(0.0, self.end_time - time.time())
        outcomes: dict[str, dict[str, Any]] = {}
        async with client.watch(
            self.batch_ids,
            stop_when_done=True,
            timeout=timeout,
            min_interval=self.min_interval,
            max_interval=self.max_interval,
        ) as watcher:
            async for event in watcher:
                if event.is_final:
                    outcomes[event.batch_id] = _outcome(event)
                    self.log.info("batch %s ended: %s", event.batch_id, event.kind)
                    if self.wait_for == "any":
                        break
        return outcomes

    async def on_kill(self) -> None:
        """With ``cancel_on_kill``, ask the API to cancel every batch that is still running."""
        if not self.cancel_on_kill:
            return
        async with await client_from_connection(self.conn_id) as client:
            for batch_id in self.batch_ids:
                await _cancel_quietly(client, batch_id)


async def _cancel_quietly(client: Client, batch_id: str) -> None:
    """Cancel, treating a batch that already ended (409) or vanished (404) as done."""
    with contextlib.suppress(ConflictError, NotFoundError):
        await client.batches.cancel(batch_id)


def _end_time(timeout: timedelta | float | None) -> float | None:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    return time.time() + seconds


class _Deferring(BaseOperator):
    """What both operators share: the trigger's arguments and the check of its event."""

    def __init__(
        self,
        *,
        conn_id: str = DEFAULT_CONN_ID,
        wait_timeout: timedelta | float | None = None,
        min_interval: float | None = None,
        max_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.wait_timeout = wait_timeout
        self.min_interval = min_interval
        self.max_interval = max_interval

    def _defer_on(self, batch_ids: Sequence[str], *, cancel_on_kill: bool) -> None:
        trigger = TwelveLabsBatchTrigger(
            batch_ids,
            conn_id=self.conn_id,
            end_time=_end_time(self.wait_timeout),
            min_interval=self.min_interval,
            max_interval=self.max_interval,
            cancel_on_kill=cancel_on_kill,
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    @staticmethod
    def _check(event: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The per-batch outcomes; raises `TwelveLabsBatchError` unless all completed."""
        outcomes: dict[str, dict[str, Any]] = dict(event["batches"])
        failed = [
            f"{batch_id}: {o['error']['message'] if o['error'] else o['status']}"
            for batch_id, o in outcomes.items()
            if not _completed(o)
        ]
        if failed:
            raise TwelveLabsBatchError("batch did not complete: " + "; ".join(failed))
        return outcomes


class TwelveLabsBatchOperator(_Deferring):
    """Creates one batch, defers until it ends, then writes its results and returns a summary.

    The summary (the task's XCom) is ``{"batch_id", "status", <counters>, "results_path"}``;
    results go to ``results_path`` (a local path or an object-storage URI such as
    ``s3://bucket/key``, templated) as JSON Lines, one `ResultItem` a line, never into XCom.
    The task fails when the batch is canceled, expires or cannot be watched, and, with
    ``fail_on_failed_items``, when any item failed.

    A retried task re-attaches to the batch of its earlier try (kept in an Airflow Variable until
    the task succeeds, or dropped when that batch ended without completing) instead of creating
    a twin. ``on_kill`` cancels the batch.

    Args:
        requests: 1 to 1,000 requests (dicts or `BatchItemRequest`), as `Batches.create` takes.
        defaults: options for every request (`BatchDefaults` or a dict).
        conn_id: the Airflow connection: password = API key, host = base URL.
        wait_timeout: how long the batch may run (seconds or a timedelta); None: until it ends.
        min_interval, max_interval: polling bounds, seconds.
    """

    template_fields: Sequence[str] = ("requests", "defaults", "results_path")

    def __init__(
        self,
        *,
        requests: Iterable[BatchItemRequest | Mapping[str, Any]],
        defaults: BatchDefaults | Mapping[str, Any] | None = None,
        model_name: str = "pegasus1.5",
        analysis_mode: str = "general",
        results_path: str | None = None,
        fail_on_failed_items: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_not_a_string(requests, "requests")
        self.requests = [msgspec.to_builtins(r) for r in requests]
        self.defaults = None if defaults is None else msgspec.to_builtins(defaults)
        self.model_name = model_name
        self.analysis_mode = analysis_mode
        self.results_path = results_path
        self.fail_on_failed_items = fail_on_failed_items
        self._batch_id: str | None = None
        self._connection: tuple[str | None, str | None] | None = None

    def execute(self, context: Context) -> None:
        """Create the batch (or find the one of an earlier try) and defer on it."""
        key = _ledger_key(context)
        recorded = Variable.get(key, default=None)
        self._read_connection()
        try:
            batch_id, created = anyio.run(self._reattach_or_create, recorded)
        except InvalidRequestError as exc:
            raise AirflowFailException(str(exc)) from exc  # a retry would be refused the same
        if created:
            Variable.set(key, batch_id, description="asyncbatch: the batch of a task in flight")
        self._batch_id = batch_id
        context["ti"].xcom_push(key="batch_id", value=batch_id)
        self._defer_on([batch_id], cancel_on_kill=True)

    def _read_connection(self) -> None:
        """Read the connection now, on the worker, before a loop starts (reading it is blocking)."""
        self._connection = _worker_credentials(self.conn_id)

    def _client(self) -> Client:
        if self._connection is None:
            raise RuntimeError("_read_connection() first")
        return _client(self.conn_id, *self._connection)

    async def _reattach_or_create(self, recorded: str | None) -> tuple[str, bool]:
        """The batch to wait on, and whether it was created now."""
        async with self._client() as client:
            if recorded is not None and await _reusable(client, recorded):
                self.log.info("re-attaching to batch %s of an earlier try", recorded)
                return recorded, False
            created = await client.batches.create(
                self.requests,
                model_name=self.model_name,
                analysis_mode=self.analysis_mode,
                defaults=self.defaults,
            )
            self.log.info("created batch %s (%d items)", created.batch_id, created.total_items)
            return created.batch_id, True

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Back on a worker: check the outcome, write the results, return the summary."""
        key = _ledger_key(context)
        try:
            outcome = next(iter(self._check(event).values()))
        except TwelveLabsBatchError:
            Variable.delete(key)  # that batch is over: a retry starts a new one
            raise
        batch_id = outcome["batch_id"]
        if self.results_path is not None:
            self._read_connection()
            count = anyio.run(self._write_results, batch_id, self.results_path)
            self.log.info("wrote %d results of batch %s to %s", count, batch_id, self.results_path)
        if self.fail_on_failed_items and outcome["failed_items"]:
            Variable.delete(key)
            raise TwelveLabsBatchError(f"batch {batch_id}: {outcome['failed_items']} items failed")
        Variable.delete(key)
        return {
            "batch_id": batch_id,
            "status": outcome["status"],
            **{name: outcome[name] for name in _COUNTERS},
            "results_path": self.results_path,
        }

    async def _write_results(self, batch_id: str, path: str) -> int:
        encoder = msgspec.json.Encoder()
        count = 0
        async with self._client() as client:
            with ObjectStoragePath(path).open("wb") as out:
                async with client.batches.results(batch_id) as items:
                    async for item in items:
                        out.write(encoder.encode(item) + b"\n")
                        count += 1
        return count

    def on_kill(self) -> None:
        """Cancel the batch this task created (nothing if it has not created one)."""
        if self._batch_id is not None:
            self._read_connection()
            anyio.run(self._cancel, self._batch_id)

    async def _cancel(self, batch_id: str) -> None:
        async with self._client() as client:
            await _cancel_quietly(client, batch_id)


async def _reusable(client: Client, batch_id: str) -> bool:
    """Whether an earlier try's batch can be waited on: it exists, and ended well if it ended."""
    try:
        batch = await client.batches.retrieve(batch_id)
    except NotFoundError:
        return False
    return not batch.is_terminal or batch.status == "completed"


def _ledger_key(context: Context) -> str:
    """The Variable that holds this task instance's batch ID across its tries."""
    ti = context["ti"]
    identity = f"{ti.dag_id}\0{ti.run_id}\0{ti.task_id}\0{ti.map_index}"
    return "asyncbatch-batch-" + hashlib.sha256(identity.encode()).hexdigest()[:32]


class TwelveLabsBatchSensor(_Deferring):
    """Waits, deferred from the start, until ``batch_ids`` (templated) have all ended.

    Succeeds, returning ``{batch_id: outcome}`` (see `TwelveLabsBatchTrigger`), when every batch
    completed; fails when any was canceled, expired, is gone or could not be watched.
    """

    template_fields: Sequence[str] = ("batch_ids",)

    def __init__(self, *, batch_ids: Sequence[str] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch_ids = batch_ids

    def execute(self, context: Context) -> None:
        """Defer on the trigger straight away: no worker slot is held while waiting."""
        ids = [self.batch_ids] if isinstance(self.batch_ids, str) else list(self.batch_ids)
        self._defer_on(ids, cancel_on_kill=False)

    def execute_complete(
        self, context: Context, event: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """The per-batch outcomes, once all completed."""
        return self._check(event)


class TwelveLabsJobOperator(BaseOperator):
    """Runs a job (``client.jobs.run``) on the worker: any number of requests, through as many
    batches as the account's slots allow, one results line per request in ``results_path``.

    It defers between waves (``deferrable=True``, the default): a wave, on a worker, collects
    the job's ended batches, fills its free slots with new batches and appends the newly final
    lines; then the task defers on `TwelveLabsBatchTrigger` (``wait_for="any"``) with the job's
    active batches, so no worker slot is held while they run, and ``execute_complete`` runs the
    next wave, until none is left running. Waves may run on different workers: the state must
    be where they all reach it (a shared directory, or Redis). ``deferrable=False`` runs the
    whole job in one worker process with a watcher, holding the slot until it ends.

    Retries resume. The job's state is kept in ``state`` (templated; by default a SQLite file
    under ``state_dir`` named from the DAG, run, task and map index), so a retried task
    continues the same job: batches of the earlier try are waited on, never created twice,
    and a request already ready is never sent again. ``results_path`` gets exactly one JSON
    line per request (design §9's line: ``custom_id``, ``line``, ``status``, ``data``,
    ``error``, ``attempts``, ``batch_id``, ``task_id``), written before each outcome is
    acknowledged; a retry appends only the lines missing. A local path is appended to as the
    job goes; an object-storage URI (``s3://...``, through ``ObjectStoragePath``) is written
    whole, from a local copy (next to a SQLite state, under ``state_dir`` for a Redis one),
    when the job has ended; a wave that finds the copy incomplete (it ran on another worker)
    writes every outcome it lacks again, so the copy published is whole. The state outlives
    the task (a cleared and rerun task finds its job done and writes nothing); delete it to
    run the job afresh.

    The summary (the task's XCom) is ``{"total", "items": {status: count}, "batches",
    "attempts", "written", "results_path"}``, where ``items`` counts ``ready``, ``failed``
    and ``canceled`` requests (and ``waiting``/``running``, 0 once the job has ended) and
    ``written`` the lines this try wrote. With ``fail_on_failed_items`` the task then fails
    (`TwelveLabsJobError`, not retried) when any request did not end ready. ``on_kill`` stops
    a ``deferrable=False`` job where it is, leaving its batches running and its state resumable.

    Args:
        requests: the path of a JSON Lines file (one request a line; templated; read on the
            worker) or a list of requests (dicts or `BatchItemRequest`).
        results_path: where the results lines go (templated): a path or object-storage URI.
        defaults: options for every request (`BatchDefaults` or a dict; templated).
        prompt: shorthand for ``defaults={"prompt": {"input_text": prompt}}`` (templated).
        model_name, analysis_mode: as for `Batches.create`.
        max_attempts: batches a request may go into (failed ones go round again).
        max_active: the account's active-batch limit (the API's is 5).
        state: the job's state (templated): ``sqlite:///PATH``, a file path, or
            ``redis://HOST:PORT/DB`` (the ``redis`` extra), whose keys get a prefix of the
            task instance's own unless the URL gives ``?prefix=``.
        state_dir: where the default state goes (default ``$AIRFLOW_HOME/asyncbatch/jobs``);
            with workers on several machines, a directory they all share, or a wave or retry
            that lands elsewhere starts the job again.
        conn_id: the Airflow connection: password = API key, host = base URL.
        min_interval, max_interval: polling bounds of the job's batches, seconds
            (default 10 to 60).
        fail_on_failed_items: fail the task when some requests did not end ready.
        deferrable: defer between waves (the default), or run the job on the worker.
    """

    template_fields: Sequence[str] = (
        "requests",
        "results_path",
        "defaults",
        "prompt",
        "state",
        "state_dir",
    )

    def __init__(
        self,
        *,
        requests: str | os.PathLike[str] | Iterable[BatchItemRequest | Mapping[str, Any]],
        results_path: str,
        defaults: BatchDefaults | Mapping[str, Any] | None = None,
        prompt: str | None = None,
        model_name: str = "pegasus1.5",
        analysis_mode: str = "general",
        max_attempts: int = 3,
        max_active: int = 5,
        state: str | None = None,
        state_dir: str | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        min_interval: float | None = None,
        max_interval: float | None = None,
        fail_on_failed_items: bool = False,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.requests: str | list[Any] = (
            os.fspath(requests)
            if isinstance(requests, str | os.PathLike)
            else [msgspec.to_builtins(r) for r in requests]
        )
        self.results_path = results_path
        self.defaults = None if defaults is None else msgspec.to_builtins(defaults)
        self.prompt = prompt
        check_limits(max_attempts=max_attempts, max_active=max_active)
        self.model_name = model_name
        self.analysis_mode = analysis_mode
        self.max_attempts = max_attempts
        self.max_active = max_active
        self.state = state
        self.state_dir = state_dir
        self.conn_id = conn_id
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.fail_on_failed_items = fail_on_failed_items
        self._stop: Callable[[], None] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        """Advance the job one wave and defer until one of its batches ends (or, with
        ``deferrable=False``, run it to its end here); the summary once it has ended."""
        if self.deferrable:
            return self._advance(context, 0)
        state = self._state_url(context)
        results = _Results(self.results_path, state, self._local_copy(context, state))
        connection = _worker_credentials(self.conn_id)
        options = self._job_options(state)
        self.log.info("job state: %s; results: %s", redact_url(state), self.results_path)
        with _refused_for_good():
            stats, written = anyio.run(self._run, connection, options, results)
        return self._finish(stats, written, results)

    def execute_complete(
        self, context: Context, event: dict[str, Any], written: int = 0
    ) -> dict[str, Any]:
        """Back from the trigger (one of the job's batches ended): the next wave."""
        ended = ", ".join(f"{b} {o['event']} {o['status']}" for b, o in event["batches"].items())
        self.log.info("batch ended: %s", ended)
        return self._advance(context, written)

    def _advance(self, context: Context, written: int) -> dict[str, Any]:
        """One wave; defers while batches run (``written``: lines this try wrote so far)."""
        state = self._state_url(context)
        results = _Results(self.results_path, state, self._local_copy(context, state))
        connection = _worker_credentials(self.conn_id)
        options = self._job_options(state)
        with _refused_for_good():
            active, stats, count = anyio.run(self._wave, connection, options, results)
        written += count
        if active:
            self.log.info(
                "job state: %s; %d of %d requests final, %d batches running: deferring",
                redact_url(state),
                stats.total - stats.items["waiting"] - stats.items["running"],
                stats.total,
                len(active),
            )
            poll = self._poll()
            trigger = TwelveLabsBatchTrigger(
                active,
                conn_id=self.conn_id,
                min_interval=poll.min_interval,
                max_interval=poll.max_interval,
                wait_for="any",
            )
            self.defer(trigger=trigger, method_name="execute_complete", kwargs={"written": written})
        return self._finish(stats, written, results)

    async def _wave(
        self,
        connection: tuple[str | None, str | None],
        options: dict[str, Any],
        results: _Results,
    ) -> tuple[list[str], JobStatistics, int]:
        """`Job.advance`: what ended collected, free slots filled, new outcomes written."""
        lines = await results.read_back()
        async with _client(self.conn_id, *connection) as client:
            job = client.jobs.run(**options)
            async with job.advance() as active:
                async with results.open(job, lines) as file:
                    written = await deliver(job, file)
                return active, job.statistics(), written

    def _finish(self, stats: JobStatistics, written: int, results: _Results) -> dict[str, Any]:
        results.publish()
        summary = _job_summary(stats, written, self.results_path)
        self.log.info("job ended: %s", summary)
        not_ready = stats.total - stats.items.get(OutcomeStatus.READY, 0)
        if self.fail_on_failed_items and not_ready:
            raise TwelveLabsJobError(f"{not_ready} of {stats.total} requests did not end ready")
        return summary

    def _job_options(self, state: str) -> dict[str, Any]:
        requests = self.requests
        if isinstance(requests, str):
            _check_local(requests, "requests")
        return {
            "requests": requests,
            "defaults": self._defaults(),
            "model_name": self.model_name,
            "analysis_mode": self.analysis_mode,
            "state": state,
            "max_attempts": self.max_attempts,
            "max_active": self.max_active,
            "poll": self._poll(),
            "auto_ack": False,
            "on_event": self._log_event,
        }

    def _defaults(self) -> dict[str, Any] | None:
        if self.prompt is None:
            return self.defaults
        defaults = dict(self.defaults or {})
        if "prompt" in defaults:
            raise ValueError("give the prompt as prompt= or in defaults, not both")
        defaults["prompt"] = {"input_text": self.prompt}
        return defaults

    def _poll(self) -> PollPolicy:
        low = self.min_interval or DEFAULT_POLL.min_interval
        high = self.max_interval or max(low, DEFAULT_POLL.max_interval)
        return PollPolicy(min_interval=low, max_interval=high)

    def _log_event(self, event: Event) -> None:
        if event.is_final:
            self.log.info("batch %s ended: %s", event.batch_id, event.kind)

    def _state_url(self, context: Context) -> str:
        if self.state:
            scheme = urlsplit(self.state).scheme.lower()
            if scheme == "sqlite":
                return self.state
            if scheme in _REDIS_SCHEMES:
                return _with_prefix(self.state, context)
            if "://" in self.state:
                raise AirflowFailException(
                    "a job operator's state is sqlite:///PATH, a file path or "
                    "redis://HOST:PORT/DB: a retry must find it again"
                )
            return f"sqlite:///{Path(self.state).resolve()}"
        return f"sqlite:///{(self._state_dir() / _state_name(context)).resolve()}"

    def _state_dir(self) -> Path:
        return Path(self.state_dir or _default_state_dir())

    def _local_copy(self, context: Context, state: str) -> Path:
        """Where the results are gathered before they go to an object-storage destination:
        next to a SQLite state, or under ``state_dir`` for a Redis one."""
        if urlsplit(state).scheme.lower() == "sqlite":
            return Path(urlsplit(state).path[1:] + ".results.jsonl")
        return (self._state_dir() / _state_name(context)).with_suffix(".results.jsonl")

    async def _run(
        self,
        connection: tuple[str | None, str | None],
        options: dict[str, Any],
        results: _Results,
    ) -> tuple[JobStatistics, int]:
        """The job to its end, or until `on_kill`; raises `TwelveLabsJobStopped` then."""
        lines = await results.read_back()
        loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:

            def stop() -> None:
                loop.call_soon_threadsafe(scope.cancel)

            self._stop = stop
            try:
                async with _client(self.conn_id, *connection) as client:
                    job = client.jobs.run(**options)
                    async with job:
                        async with results.open(job, lines) as file:
                            written = await deliver(job, file)
                        return job.statistics(), written
            finally:
                self._stop = None
        raise TwelveLabsJobStopped("the job was stopped before it ended; a retry resumes it")

    def on_kill(self) -> None:
        """Stop the job where it is: its batches keep running, its state stays resumable.

        Safe from a signal handler or another thread: it only asks the job's loop to cancel.
        """
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                stop()


@contextlib.contextmanager
def _refused_for_good() -> Iterator[None]:
    """Bad requests, or a state that holds another job: a retry would fail the same."""
    try:
        yield
    except (InvalidRequestError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from exc


class _Results:
    """Where a job's results lines go: the local file itself, or a local copy of an
    object-storage destination, written whole to it once the job has ended."""

    def __init__(self, destination: str, state: str, local_copy: Path) -> None:
        self.destination = destination
        self.remote = urlsplit(destination).scheme not in ("", "file")
        if self.remote:
            self.local = local_copy
        else:
            self.local = Path(
                urlsplit(destination).path if destination.startswith("file:") else destination
            )
        self._state = state

    async def read_back(self) -> list[int]:
        """The lines the local file holds (a torn last one cut off), read before the job is
        entered: a file with lines and a state without the job belong to another job."""
        try:
            lines = written_lines(self.local)
        except ConfigurationError as exc:  # not a job's results file: a retry cannot help
            raise AirflowFailException(str(exc)) from exc
        if lines and not await has_job(self._state):
            raise AirflowFailException(
                f"{self.destination} already holds {len(lines)} line(s) but the job's state has "
                "none: give the state it was written with, or another results_path"
            )
        return lines

    @contextlib.asynccontextmanager
    async def open(self, job: Job, lines: list[int]) -> AsyncIterator[TextIO]:
        """The local file opened for appending, after ``job`` was told the lines it holds."""
        await job.reconcile(lines)
        self.local.parent.mkdir(parents=True, exist_ok=True)
        with self.local.open("a", encoding="utf-8") as file:
            yield file

    def publish(self) -> None:
        """Copy the complete local file to an object-storage destination."""
        if not self.remote:
            return
        target = ObjectStoragePath(self.destination)
        with self.local.open("rb") as source, target.open("wb") as out:
            while block := source.read(1 << 20):
                out.write(block)


def _job_summary(stats: JobStatistics, written: int, results_path: str) -> dict[str, Any]:
    return {
        "total": stats.total,
        "items": dict(stats.items),
        "batches": stats.batches_done + stats.batches_active,
        "attempts": stats.attempts,
        "written": written,
        "results_path": results_path,
    }


def _check_local(path: str, what: str) -> None:
    if urlsplit(path).scheme not in ("", "file"):
        raise AirflowFailException(f"{what}: a job reads a local JSON Lines file, not {path!r}")


def _default_state_dir() -> Path:
    home = os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow"
    return Path(home) / "asyncbatch" / "jobs"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _with_prefix(url: str, context: Context) -> str:
    """A Redis state URL with a key prefix of the task instance's own, unless it names one."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "prefix" for key, _ in query):
        return url
    name = _state_name(context).removesuffix(".db")
    query.append(("prefix", f"asyncbatch:{name}:"))
    return parts._replace(query=urlencode(query)).geturl()


def _state_name(context: Context) -> str:
    """``DAG/TASK[-MAP].HASH.db``: readable, and one file per task instance (the hash covers
    DAG, run, task and map index, so runs never share a job)."""
    ti = context["ti"]
    identity = f"{ti.dag_id}\0{ti.run_id}\0{ti.task_id}\0{ti.map_index}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    task = _UNSAFE.sub("_", ti.task_id)
    if ti.map_index is not None and ti.map_index >= 0:
        task += f"-{ti.map_index}"
    return f"{_UNSAFE.sub('_', ti.dag_id)}/{task}.{digest}.db"
