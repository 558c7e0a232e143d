"""A job's outcomes as a JSON Lines file (design §9): exactly one line per request.

Each outcome is written (one line, flushed) before it is acknowledged. A resumed job first
reads the file back with `written_lines` and passes the result to `Job.reconcile`: the lines
it holds count as delivered, every other final outcome comes again, so the file ends with one
line per request whatever moment a run was stopped at. ``asyncbatch run`` and the Airflow job
operator both write this way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from .._errors import ConfigurationError
from .outcome import JobOutcome
from .runner import Job
from .state import open_ledger


def written_lines(path: Path) -> list[int]:
    """The ``line`` of every complete line of ``path`` ([] when it does not exist).

    A torn last line (a process killed mid-write) is cut off the file. A line that is not a
    job's results line raises `ConfigurationError` naming it; `OSError` when unreadable.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as file:
            file.truncate(len(complete))
            file.flush()
            os.fsync(file.fileno())
    lines = []
    for number, raw in enumerate(complete.splitlines(), start=1):
        try:
            lines.append(int(json.loads(raw)["line"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(
                f"{path} line {number} is not a results line of a job"
            ) from None
    return lines


async def has_job(state: str) -> bool:
    """Whether the state URL holds a job whose requests were all read in."""
    ledger = await open_ledger(state)
    try:
        return ledger.meta("input") == "complete"
    finally:
        await ledger.aclose()


def write_outcome(file: TextIO, outcome: JobOutcome) -> None:
    """Write ``outcome``'s results line and flush it into the OS's hands."""
    file.write(json.dumps(outcome.to_line(), separators=(",", ":")) + "\n")
    file.flush()  # a killed process loses nothing written


async def deliver(job: Job, file: TextIO) -> int:
    """Write every outcome ``job`` still owes to ``file``, acknowledging each after its line
    (the job must run with ``auto_ack=False``). Returns the lines written."""
    count = 0
    async for outcome in job:
        write_outcome(file, outcome)
        await job.ack(outcome)
        count += 1
    return count
