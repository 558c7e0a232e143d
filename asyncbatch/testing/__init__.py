"""Test support: a faithful in-process stand-in for the API, and virtual time."""

from ._clocks import Clock, ManualClock, ScaledClock, loop_clock
from ._faults import FaultKind, FaultRule
from ._sim_config import SimulatorConfig
from ._sim_errors import SimulatorError
from ._sim_http import SimulatorStats
from ._sim_webhooks import WebhookAttempt, WebhookFaults
from ._simulator import Simulator, serve
from ._virtual_time import VirtualTimeLoop

__all__ = [
    "Clock",
    "FaultKind",
    "FaultRule",
    "ManualClock",
    "ScaledClock",
    "Simulator",
    "SimulatorConfig",
    "SimulatorError",
    "SimulatorStats",
    "VirtualTimeLoop",
    "WebhookAttempt",
    "WebhookFaults",
    "loop_clock",
    "serve",
]
