"""Test support: a faithful in-process stand-in for the API, and virtual time."""

from ._virtual_time import VirtualTimeLoop

__all__ = ["VirtualTimeLoop"]
