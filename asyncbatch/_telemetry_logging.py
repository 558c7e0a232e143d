"""Logging: asyncbatch's signals as log records with structured fields (``extra=``).

Each record's message reads on its own, and its fields are attributes of the
record (``record.asyncbatch_signal``, ``record.endpoint``, ...), which a JSON
formatter or a structured-logging handler picks up as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ._telemetry import JobProgress, TelemetryHooks


class LoggingHooks(TelemetryHooks):
    """Logs asyncbatch's signals to ``logger`` (default: the ``asyncbatch.telemetry`` logger).

    Retries, 429 pauses and job progress are logged at ``level`` (default INFO);
    every request, event and change of counts at DEBUG, so a service at INFO sees
    only what went wrong or moved on. Every record has ``asyncbatch_signal`` (the
    hook's name) among its fields.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("asyncbatch.telemetry")
        self.level = level

    def _log(self, level: int, message: str, signal: str, **fields: object) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, message, extra={"asyncbatch_signal": signal, **fields})

    def request(self, method: str, endpoint: str, outcome: str, seconds: float) -> None:
        message = f"{method} {endpoint}: {outcome} in {seconds:.3f} s"
        fields = {"method": method, "endpoint": endpoint, "outcome": outcome, "seconds": seconds}
        self._log(logging.DEBUG, message, "request", **fields)

    def retry(self, endpoint: str, reason: str, delay: float | None) -> None:
        when = "on the watcher's schedule" if delay is None else f"in {delay:.2f} s"
        message = f"{endpoint}: {reason}; retrying {when}"
        self._log(self.level, message, "retry", endpoint=endpoint, reason=reason, delay=delay)

    def rate_limit_pause(self, seconds: float) -> None:
        message = f"rate limited: every request paused for {seconds:.1f} s"
        self._log(self.level, message, "rate_limit_pause", seconds=seconds)

    def event(self, kind: str) -> None:
        self._log(logging.DEBUG, f"event: {kind}", "event", kind=str(kind))

    def batches(self, *, tracked: int, open: int, active: int) -> None:
        message = f"batches changed: tracked {tracked:+d}, open {open:+d}, active {active:+d}"
        self._log(logging.DEBUG, message, "batches", tracked=tracked, open=open, active=active)

    def items(self, changes: Mapping[str, int]) -> None:
        text = ", ".join(f"{status} {n:+d}" for status, n in changes.items())
        self._log(logging.DEBUG, f"items changed: {text}", "items", changes=dict(changes))

    def job_progress(self, job: str, progress: JobProgress) -> None:
        text = ", ".join(f"{n} {status}" for status, n in progress.items.items())
        message = (
            f"job {job}: {text}; batches {progress.batches_active} active, "
            f"{progress.batches_done} done"
        )
        fields = {
            "job": job,
            "items": dict(progress.items),
            "batches_active": progress.batches_active,
            "batches_done": progress.batches_done,
            "attempts": progress.attempts,
        }
        self._log(self.level, message, "job_progress", **fields)
