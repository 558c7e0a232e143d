"""The one error the simulated API raises: an answer with an error status."""

from __future__ import annotations


class SimulatorError(Exception):
    """The simulated API refused a request: ``status``, ``code`` and ``message``.

    The HTTP layer turns it into the documented body ``{"error": {"code",
    "message"}}``; the synchronous helpers of `Simulator` raise it as is.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "parameter_invalid") -> SimulatorError:
    """A 400 with one of the general parameter codes."""
    return SimulatorError(400, code, message)


def not_found(batch_id: str) -> SimulatorError:
    """The 404 of every batch endpoint (its code is not documented; see docs/simulator.md)."""
    return SimulatorError(
        404, "resource_not_exist", f"Batch with id {batch_id[:64]!r} does not exist."
    )
