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

The connection (``twelvelabs_default`` unless told): password = API key, host = base URL, e.g.
``AIRFLOW_CONN_TWELVELABS_DEFAULT='{"conn_type": "generic", "password": "<key>"}'``; without a
host the client's default (``$TWELVELABS_BASE_URL``, then the public API) applies.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

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
from ._models import Batch, BatchDefaults, BatchItemRequest, check_batch_id, check_not_a_string

__all__ = [
    "DEFAULT_CONN_ID",
    "TwelveLabsBatchError",
    "TwelveLabsBatchOperator",
    "TwelveLabsBatchSensor",
    "TwelveLabsBatchTrigger",
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
    """Watches ``batch_ids`` and fires one event when every one has ended.

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
    ) -> None:
        super().__init__()
        check_not_a_string(batch_ids, "batch_ids")
        self.batch_ids = [check_batch_id(batch_id) for batch_id in batch_ids]
        if not self.batch_ids:
            raise ValueError("batch_ids is empty: give at least one batch to watch")
        self.conn_id = conn_id
        self.end_time = end_time
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.cancel_on_kill = cancel_on_kill

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
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Watch until every batch has ended (or ``end_time``), then yield one event."""
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
