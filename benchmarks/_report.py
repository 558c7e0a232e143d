"""Plain-text tables and the machine a run came from, shared by every benchmark."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

_VERSIONED = ("aiohttp", "msgspec", "twelvelabs", "httpx", "pydantic")


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo, or the platform's guess elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    """One line naming the CPU count, CPU model, Python and the libraries measured."""
    versions = ", ".join(f"{name} {_version(name)}" for name in _VERSIONED)
    return (
        f"machine: nproc={os.cpu_count()}, cpu={cpu_model()!r}, "
        f"python {platform.python_version()}; {versions}"
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def median(values: Iterable[float]) -> float:
    """The median of ``values``: robust to the odd slow repeat on a noisy machine."""
    return statistics.median(list(values))


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table under a title line; numeric columns are right-aligned, text left."""
    body = [list(headers), *[list(row) for row in rows]]
    columns = range(len(headers))
    widths = [max(len(row[i]) for row in body) for i in columns]
    left = [not all(_is_number(row[i]) for row in body[1:]) for i in columns]
    lines = [f"\n{title}\n"]
    for number, row in enumerate(body):
        cells = [row[i].ljust(widths[i]) if left[i] else row[i].rjust(widths[i]) for i in columns]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append("|" + "|".join(_rule(widths[i], left[i]) for i in columns) + "|")
    return "\n".join(lines)


def _is_number(cell: str) -> bool:
    try:
        float(cell.removesuffix("x"))
    except ValueError:
        return False
    return True


def _rule(width: int, left: bool) -> str:
    return "-" * (width + 2) if left else "-" * (width + 1) + ":"


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` as ``1.23x``; ``n/a`` when the denominator is zero."""
    if denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"
