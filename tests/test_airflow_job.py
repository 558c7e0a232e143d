"""The Airflow job operator, run as a worker runs it (``execute`` with the task's context)
against a simulator served from this process on a clock 40 times faster than real time.

Deferring (the default), each ``TaskDeferred`` is resumed as Airflow resumes it: the trigger is
rebuilt from its serialized form (through JSON) and run to its event, then the method it names
is called on a fresh operator with the event and the deferral's kwargs.

The connection comes from ``AIRFLOW_CONN_TWELVELABS_DEFAULT`` as in a deployment; nothing of
Airflow or of asyncbatch is mocked. A stopped try is stopped as Airflow stops one: ``on_kill``
from another thread while ``execute`` runs; the retry is a fresh operator with the same task
instance, as Airflow builds one per try. Skipped without Airflow (``make test-airflow`` has
it; ``ASYNCBATCH_REQUIRE_AIRFLOW=1`` makes that a failure).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

if os.environ.get("ASYNCBATCH_REQUIRE_AIRFLOW"):
    import airflow  # noqa: F401 - a missing Airflow fails here in CI instead of skipping
pytest.importorskip("airflow", reason="Airflow is not installed: run `make test-airflow`")

import anyio
from airflow.sdk import Context, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from airflow.sdk.io import attach
from airflow.triggers.base import TriggerEvent
from anyio.from_thread import BlockingPortal
from fsspec.implementations.memory import MemoryFileSystem

from asyncbatch import AuthenticationError, StateStoreError
from asyncbatch.airflow import (
    TwelveLabsBatchTrigger,
    TwelveLabsJobError,
    TwelveLabsJobOperator,
    TwelveLabsJobStopped,
)
from asyncbatch.testing import Simulator
from tests._server import unused_port
from tests.replica_worker import API_KEY, RunningClock, count_lines, serve_simulator, wait_for
from tests.test_jobs_kill import check_against_simulator

SIM_OPTIONS: dict[str, Any] = {
    "item_seconds": 2.0,
    "pending_seconds": 0.5,
    "seed": 19,
    "failing_assets": ("bad",),  # a request for "bad" fails every attempt
}


@dataclass(frozen=True)
class TaskInstance:
    """The identity of a task instance, as ``context["ti"]`` has it."""

    dag_id: str = "clips"
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    task_id: str = "analyse"
    map_index: int = -1


def context_of(ti: TaskInstance) -> Context:
    return cast(Context, {"ti": ti})


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BlockingPortal, Simulator]]:
    """A simulator whose clock runs 40 times faster than real time, and the connection to it."""
    clock = RunningClock(scale=40.0)
    with serve_simulator(clock, **SIM_OPTIONS) as (portal, sim):
        connection = {"conn_type": "generic", "host": sim.base_url, "password": API_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", json.dumps(connection))
        clock.run()
        yield portal, sim


def write_requests(path: Path, count: int, *, failing: int = -1) -> Path:
    lines = [
        json.dumps(
            {"video": {"asset_id": "bad" if i == failing else f"a-{i}"}, "custom_id": f"r-{i}"}
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def operator(tmp_path: Path, **options: Any) -> TwelveLabsJobOperator:
    arguments: dict[str, Any] = {
        "task_id": "analyse",
        "requests": str(tmp_path / "requests.jsonl"),
        "prompt": "Describe it.",
        "results_path": str(tmp_path / "results.jsonl"),
        "state_dir": str(tmp_path / "states"),
        "min_interval": 0.2,
        "max_interval": 0.5,
        "deferrable": False,
        **options,
    }
    return TwelveLabsJobOperator(**arguments)


@dataclass
class Deferrals:
    """What a deferring task did: its summary, and each deferral's serialized trigger."""

    summary: dict[str, Any]
    triggers: list[dict[str, Any]]


async def events_of(trigger: TwelveLabsBatchTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def run_deferring(make: Callable[[], TwelveLabsJobOperator], ti: TaskInstance) -> Deferrals:
    """One try of a deferring task, from ``execute`` until it returns (or raises)."""
    triggers: list[dict[str, Any]] = []
    step: Callable[[], dict[str, Any]] = functools.partial(make().execute, context_of(ti))
    while True:
        try:
            return Deferrals(step(), triggers)
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            assert classpath == "asyncbatch.airflow.TwelveLabsBatchTrigger"
            kwargs = json.loads(json.dumps(kwargs))  # as the triggerer gets them
            triggers.append(kwargs)
            [event] = anyio.run(events_of, TwelveLabsBatchTrigger(**kwargs))
            payload = json.loads(json.dumps(event.payload))
            method = getattr(make(), deferred.method_name)  # a fresh operator, as after a defer
            step = functools.partial(method, context_of(ti), payload, **(deferred.kwargs or {}))


def console(capsys: pytest.CaptureFixture[str]) -> str:
    """What was written to stdout and stderr so far: where the task logger writes."""
    written = capsys.readouterr()
    return written.out + written.err


def sent(portal: BlockingPortal, sim: Simulator) -> list[tuple[str, str, str]]:
    """Every (batch_id, custom_id, status) the simulator holds."""
    return [
        (batch_id, r["custom_id"], r["status"])
        for batch_id in portal.call(sim.batch_ids)
        for r in portal.call(sim.results, batch_id)
    ]


@pytest.mark.timeout(120)
def test_a_job_of_300_requests_writes_one_line_per_request(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path
) -> None:
    """The job operator, run on a worker, sends 300 requests over several batches and writes one
    result line per request; its summary is plain JSON matching the simulator."""
    portal, sim = simulator
    write_requests(tmp_path / "requests.jsonl", 300)
    summary = operator(tmp_path).execute(context_of(TaskInstance()))  # on the worker
    assert json.loads(json.dumps(summary)) == summary  # plain JSON for XCom
    assert summary["total"] == 300
    assert summary["items"]["ready"] == 300
    assert summary["written"] == 300
    assert summary["results_path"] == str(tmp_path / "results.jsonl")
    batches = portal.call(sim.batch_ids)
    assert summary["batches"] == len(batches) > 1  # more than one batch: a real job
    check_against_simulator(tmp_path / "results.jsonl", sent(portal, sim), 300)
    assert summary["attempts"] == 300


@pytest.mark.timeout(180)
def test_a_killed_try_is_resumed_by_the_retry_without_twin_batches(
    simulator: tuple[BlockingPortal, Simulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A try stopped by `on_kill` cancels nothing and leaves its state; the retry writes only the
    missing lines, reuses the batches already made, and never logs the key."""
    portal, sim = simulator
    write_requests(tmp_path / "requests.jsonl", 400)
    results = tmp_path / "results.jsonl"
    ti = TaskInstance()
    first = operator(tmp_path)
    caplog.set_level(logging.DEBUG)
    with ThreadPoolExecutor(1) as worker:
        try_one = worker.submit(first.execute, context_of(ti))
        assert wait_for(lambda: count_lines(results) >= 50 or try_one.done(), 60)
        first.on_kill()  # what Airflow's SIGTERM handler calls
        with pytest.raises(TwelveLabsJobStopped, match="a retry resumes it"):
            try_one.result(timeout=30)
    written_first = count_lines(results)
    assert 50 <= written_first < 400  # stopped midway
    before = sent(portal, sim)
    assert all(status != "canceled" for _, _, status in before)  # stopping cancels nothing
    [state] = (tmp_path / "states" / "clips").glob("analyse.*.db")  # one state per instance

    summary = operator(tmp_path).execute(context_of(ti))  # the retry: a fresh operator

    assert summary["items"]["ready"] == 400
    assert summary["written"] == 400 - written_first  # only what was missing
    everything = sent(portal, sim)
    assert summary["batches"] == len(portal.call(sim.batch_ids))
    assert {batch_id for batch_id, _, _ in before} <= {batch_id for batch_id, _, _ in everything}
    check_against_simulator(results, everything, 400)
    assert state.exists()
    assert API_KEY not in caplog.text + console(capsys)  # the task logger writes to stdout
    assert API_KEY not in json.dumps(summary)


@pytest.mark.timeout(120)
def test_requests_not_ready_fail_the_task_when_asked_after_every_line_is_written(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path
) -> None:
    """With `fail_on_failed_items` a request that stays failed after `max_attempts` fails the task,
    but only after every line is written; the given state path is used."""
    portal, sim = simulator
    write_requests(tmp_path / "requests.jsonl", 20, failing=7)
    task = operator(
        tmp_path, fail_on_failed_items=True, max_attempts=2, state=str(tmp_path / "job.db")
    )
    with pytest.raises(TwelveLabsJobError, match="1 of 20 requests did not end ready"):
        task.execute(context_of(TaskInstance()))
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 20
    [failed] = [line for line in lines if line["status"] != "ready"]
    assert failed["custom_id"] == "r-7"
    assert failed["attempts"] == 2
    # From the simulator's side: line 8 went into two batches, every other line into one.
    held = [custom_id.rsplit("-", 1)[1] for _, custom_id, _ in sent(portal, sim)]
    assert held.count("8") == 2
    assert len(held) == 21
    assert (tmp_path / "job.db").exists()  # the state given, not one under state_dir
    assert not (tmp_path / "states").exists()


@pytest.mark.timeout(60)
def test_results_of_another_job_are_refused_and_nothing_is_sent(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path
) -> None:
    """A results file already holding lines the job's state does not know fails the task before
    any batch is created."""
    portal, sim = simulator
    write_requests(tmp_path / "requests.jsonl", 5)
    (tmp_path / "results.jsonl").write_text('{"line": 1, "status": "ready"}\n')
    with pytest.raises(AirflowFailException, match="already holds 1 line"):
        operator(tmp_path).execute(context_of(TaskInstance()))
    assert portal.call(sim.batch_ids) == []


@pytest.mark.timeout(60)
def test_an_invalid_request_fails_the_task_without_retries_naming_its_line(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path
) -> None:
    """An invalid request fails the task with AirflowFailException (no retry) naming its line, and
    nothing is sent."""
    portal, sim = simulator
    bad = [{"video": {"asset_id": "a-1"}}, {"vidoe": {"asset_id": "a-2"}}]
    with pytest.raises(AirflowFailException, match="line 2"):
        operator(tmp_path, requests=bad).execute(context_of(TaskInstance()))
    assert portal.call(sim.batch_ids) == []


def test_mapped_task_instances_get_their_own_state() -> None:
    """Each mapped task instance and each DAG run gets its own state file; the same instance always
    gets the same one."""
    task = TwelveLabsJobOperator(
        task_id="analyse", requests=[], results_path="/r.jsonl", state_dir="/states"
    )
    one = task._state_url(context_of(TaskInstance(map_index=1)))
    two = task._state_url(context_of(TaskInstance(map_index=2)))
    other_run = task._state_url(context_of(TaskInstance(map_index=1, run_id="scheduled__x")))
    assert one.startswith("sqlite:////states/clips/analyse-1.")
    assert len({one, two, other_run}) == 3
    assert task._state_url(context_of(TaskInstance(map_index=1))) == one  # stable


@pytest.mark.timeout(120)
def test_an_object_storage_destination_gets_the_whole_file_once_the_retry_ends(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path
) -> None:
    """An object-storage destination is written only once the job ends: a stopped try publishes
    nothing, and the retry publishes the whole local file."""
    portal, sim = simulator
    attach("memory", fs=MemoryFileSystem())
    destination = f"memory://results/{tmp_path.name}/results.jsonl"
    write_requests(tmp_path / "requests.jsonl", 200)
    ti = TaskInstance(task_id="to_storage")
    first = operator(tmp_path, results_path=destination)
    [state] = [first._state_url(context_of(ti)).removeprefix("sqlite:///")]
    local_copy = Path(state + ".results.jsonl")
    with ThreadPoolExecutor(1) as worker:
        try_one = worker.submit(first.execute, context_of(ti))
        assert wait_for(lambda: count_lines(local_copy) >= 20 or try_one.done(), 60)
        first.on_kill()
        with pytest.raises(TwelveLabsJobStopped):
            try_one.result(timeout=30)
    assert not ObjectStoragePath(destination).exists()  # nothing published by a stopped try

    summary = operator(tmp_path, results_path=destination).execute(context_of(ti))

    assert summary["results_path"] == destination
    published = ObjectStoragePath(destination).read_text()
    assert published == local_copy.read_text()
    (tmp_path / "published.jsonl").write_text(published)
    check_against_simulator(tmp_path / "published.jsonl", sent(portal, sim), 200)


@pytest.mark.timeout(180)
def test_a_deferring_job_of_400_requests_holds_no_worker_between_waves(
    simulator: tuple[BlockingPortal, Simulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deferrable job defers to a `wait_for="any"` trigger between waves, and across all waves
    writes every line once, with one create per batch and no key in triggers or logs."""
    portal, sim = simulator
    write_requests(tmp_path / "requests.jsonl", 400, failing=9)
    caplog.set_level(logging.DEBUG)
    ran = run_deferring(lambda: operator(tmp_path, deferrable=True, max_attempts=2), TaskInstance())
    assert len(ran.triggers) > 1  # deferred between waves, more than once
    assert all(t["wait_for"] == "any" for t in ran.triggers)
    assert all(1 <= len(t["batch_ids"]) <= 5 for t in ran.triggers)
    summary = ran.summary
    assert json.loads(json.dumps(summary)) == summary
    assert summary["total"] == 400
    assert summary["items"] == {
        "waiting": 0,
        "running": 0,
        "ready": 399,
        "failed": 1,
        "canceled": 0,
    }
    assert summary["written"] == 400  # counted over every wave of the try
    everything = sent(portal, sim)
    assert summary["batches"] == len(portal.call(sim.batch_ids))
    check_against_simulator(tmp_path / "results.jsonl", everything, 400)  # no twin batch
    assert portal.call(lambda: sim.stats.requests["create"]) == summary["batches"]
    shown = [json.dumps(ran.triggers), caplog.text, console(capsys)]
    assert all(API_KEY not in text for text in shown)


@pytest.mark.timeout(180)
def test_a_deferring_try_that_fails_midway_is_resumed_by_the_retry(
    simulator: tuple[BlockingPortal, Simulator],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deferring try that fails in a later wave (key rotated) leaves its lines; the retry defers
    too, writes only the missing lines and makes no twin batch."""
    portal, sim = simulator
    # The failing request goes round again in a batch of its own: waves after the first five.
    write_requests(tmp_path / "requests.jsonl", 300, failing=9)
    results = tmp_path / "results.jsonl"
    ti = TaskInstance()
    good = os.environ["AIRFLOW_CONN_TWELVELABS_DEFAULT"]
    waves = 0

    def fails_on_the_third_wave() -> TwelveLabsJobOperator:
        nonlocal waves
        waves += 1
        if waves == 3:  # the key was rotated under the running task: this wave fails
            wrong = dict(json.loads(good), password="rotated-key-0b7e")
            monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", json.dumps(wrong))
        return operator(tmp_path, deferrable=True, max_attempts=3)

    with pytest.raises(AuthenticationError):
        run_deferring(fails_on_the_third_wave, ti)
    written_first = count_lines(results)
    assert 0 < written_first < 300  # failed midway, with some lines written
    before = {batch_id for batch_id, _, _ in sent(portal, sim)}
    monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", good)

    retry = run_deferring(lambda: operator(tmp_path, deferrable=True, max_attempts=3), ti)

    assert retry.triggers  # the retry deferred too
    assert retry.summary["items"]["ready"] == 299
    assert retry.summary["items"]["failed"] == 1
    assert retry.summary["written"] == 300 - written_first  # only what was missing
    everything = sent(portal, sim)
    assert before <= {batch_id for batch_id, _, _ in everything}
    check_against_simulator(results, everything, 300)
    assert portal.call(lambda: sim.stats.requests["create"]) == len(portal.call(sim.batch_ids))


def test_a_redis_state_gets_a_prefix_of_the_task_instance_unless_it_names_one() -> None:
    """``state="redis://..."`` is kept per task instance (its own key prefix, stable across
    tries); a URL that names its prefix keeps it; any other scheme is refused."""
    task = TwelveLabsJobOperator(
        task_id="analyse", requests=[], results_path="/r.jsonl", state="redis://cache:6379/2"
    )
    one = task._state_url(context_of(TaskInstance(map_index=1)))
    two = task._state_url(context_of(TaskInstance(map_index=2)))
    assert one.startswith("redis://cache:6379/2?prefix=asyncbatch%3Aclips%2Fanalyse-1.")
    assert one != two
    assert task._state_url(context_of(TaskInstance(map_index=1))) == one
    named = TwelveLabsJobOperator(
        task_id="analyse", requests=[], results_path="/r.jsonl", state="redis://c/0?prefix=mine:"
    )
    assert named._state_url(context_of(TaskInstance())) == "redis://c/0?prefix=mine:"
    wrong = TwelveLabsJobOperator(
        task_id="analyse", requests=[], results_path="/r.jsonl", state="memory://"
    )
    with pytest.raises(AirflowFailException, match="redis://"):
        wrong._state_url(context_of(TaskInstance()))


@pytest.mark.timeout(180)
def test_waves_on_workers_without_shared_storage_share_a_redis_state(
    simulator: tuple[BlockingPortal, Simulator], tmp_path: Path, redis_url: str
) -> None:
    """A deferring job on Redis state whose waves alternate between two workers with nothing on
    disk in common publishes one whole results file: one line per request, no twin batch."""
    portal, sim = simulator
    attach("memory", fs=MemoryFileSystem())
    destination = f"memory://results/{tmp_path.name}/results.jsonl"
    write_requests(tmp_path / "requests.jsonl", 400, failing=9)
    waves = 0

    def on_next_worker() -> TwelveLabsJobOperator:
        nonlocal waves
        waves += 1
        return operator(
            tmp_path,
            deferrable=True,
            max_attempts=2,
            results_path=destination,
            state=redis_url,
            state_dir=str(tmp_path / f"worker-{waves % 2}"),
        )

    ran = run_deferring(on_next_worker, TaskInstance(task_id="on_redis"))
    assert len(ran.triggers) > 1
    assert waves > 2  # waves ran on both workers
    assert ran.summary["items"]["ready"] == 399
    (tmp_path / "published.jsonl").write_text(ObjectStoragePath(destination).read_text())
    check_against_simulator(tmp_path / "published.jsonl", sent(portal, sim), 400)
    assert portal.call(lambda: sim.stats.requests["create"]) == ran.summary["batches"]


def test_a_password_in_a_redis_state_stays_out_of_the_task_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis state URL with a password: the task logs the state with the password masked,
    and the error of a Redis out of reach does not carry it either."""
    password = "hunter2-state-PW"
    connection = {"conn_type": "generic", "host": "http://127.0.0.1:9/v1.3", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_TWELVELABS_DEFAULT", json.dumps(connection))
    write_requests(tmp_path / "requests.jsonl", 3)
    task = operator(tmp_path, state=f"redis://:{password}@127.0.0.1:{unused_port()}/0")
    with pytest.raises(StateStoreError) as caught:
        task.execute(context_of(TaskInstance(task_id="secret_state")))
    logged = console(capsys)
    assert "job state: redis://***@127.0.0.1" in logged
    assert password not in logged
    assert password not in str(caught.value)
