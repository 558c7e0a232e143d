"""Jobs: any number of requests through the account's active-batch slots, resumable, with
exactly one final outcome per request (`Job`, reached as ``client.jobs.run``).

Modules, lower first: `plan` (batch sizing, pure), `outcome` (what a job hands back),
`ledger` (what the durable record must do), `sqlite_ledger` and `redis_ledger` (two that do
it), `state` (the ledger a URL names), `source` (reading requests), `runner` (the job).
"""

from __future__ import annotations

from typing import Unpack

from .ledger import Ledger
from .outcome import Attempt, JobOutcome, JobStatistics, OutcomeStatus
from .plan import next_batch_size
from .runner import Job, JobClient, JobOptions, cancel_batches, check_limits
from .source import Requests
from .state import open_ledger


class Jobs:
    """Jobs of a client, reached as ``client.jobs``."""

    def __init__(self, client: JobClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "<asyncbatch.Jobs>"

    def run(self, requests: Requests, **options: Unpack[JobOptions]) -> Job:
        """A `Job` over ``requests``: enter it with ``async with``, iterate its outcomes.

        Args:
            requests: `BatchItemRequest` s or dicts (an iterable or an async iterable), or
                the path of a JSON Lines file. They are read to the end into ``state``
                before the first batch: an invalid request or a repeated ``custom_id``
                raises `InvalidRequestError` naming every line (up to 20) and sends nothing.
                A ``state`` that holds the job already is resumed, and its requests are
                not read again (a file is checked to be the same).
            defaults: every batch's `BatchDefaults` (e.g. the prompt).
            model_name, analysis_mode: as for `Batches.create`.
            state: where the job's record is kept, to survive a crash: ``sqlite:///PATH``
                (``?synchronous=NORMAL`` optional), or ``redis://HOST:PORT/DB?prefix=KEYS``
                (the ``redis`` extra; one job per prefix); ``memory://`` keeps nothing.
            max_attempts: batches a request may go into; ``failed`` requests, and those
                an expired batch left unfinished, go round again until then.
            max_active: the account's active-batch limit (the API's is 5).
            max_batch_size: the largest batch (the API allows 1,000).
            poll: the watcher's `PollPolicy` (default: 10 s to 60 s).
            auto_ack: asking for the next outcome acknowledges the previous one; set
                False to call `Job.ack` yourself.
            on_event: called with each watch `Event` of the job's batches.
        """
        return Job(self._client, requests, **options)


__all__ = [
    "Attempt",
    "Job",
    "JobOptions",
    "JobOutcome",
    "JobStatistics",
    "Jobs",
    "Ledger",
    "OutcomeStatus",
    "cancel_batches",
    "check_limits",
    "next_batch_size",
    "open_ledger",
]
