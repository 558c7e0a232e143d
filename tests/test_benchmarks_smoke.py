"""Every benchmark runs end to end at tiny sizes and prints a sane table, so none can rot.

No figure is asserted: machines are noisy and the figures live in benchmarks/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import decode, job_makespan, latency, poll_cpu, request_cost, scale


def _child_pids() -> set[int]:
    """PIDs of this process's children, read from /proc (every thread's list)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def _table_rows(output: str) -> list[list[str]]:
    """The cells of every Markdown data row in ``output``: not headers, not rules."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    headers = {lines[i - 1] for i, line in enumerate(lines) if line.startswith("|-")}
    data = [line for line in lines if not line.startswith("|-") and line not in headers]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in data]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_poll_cpu_measures_every_contender_and_stops_its_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The poll benchmark measures each contender, prints both sides of ratios, reaps its server."""
    before = _child_pids()
    results = poll_cpu.main(["--cpu-budget", "0.002", "--repeats", "1", "--concurrency", "2"])
    output = capsys.readouterr().out
    assert _child_pids() == before
    assert output.startswith("machine: nproc=")
    rows = _table_rows(output)
    for name in poll_cpu.CONTENDERS:
        assert results.cpu_us(name, 2) > 0
        assert results.polls(name, 2) >= 2
        assert any(row[0] == name and len(row) == 3 for row in rows)  # name, µs, polls/s
    ratios = [row for row in rows if row[0].startswith(f"{poll_cpu.CLIENT} / ")]
    assert [row[1] for row in ratios] == ["2"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 and row[4].endswith("x") for row in ratios)


def test_decode_times_every_decoder_on_every_body(capsys: pytest.CaptureFixture[str]) -> None:
    """The decode benchmark times each decoder on each body and prints one row per pair."""
    figures = decode.main(["--repeat-time", "0.0005", "--repeats", "1"])
    output = capsys.readouterr().out
    assert set(figures) == {(body, name) for body in decode.BODIES for name in decode.CONTENDERS}
    assert all(ns > 0 for ns in figures.values())
    rows = _table_rows(output)
    assert len(rows) == len(figures)
    assert all(row[4].endswith("x") for row in rows)
    assert {row[0] for row in rows if row[4] == "1.00x"} >= {decode.OURS}


def test_request_cost_counts_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    """The request-cost benchmark runs each strategy to the end and prints one row for each."""
    outcomes = request_cost.main(["--finished", "3", "--active", "2", "--items", "4"])
    output = capsys.readouterr().out
    assert [o.strategy for o in outcomes] == list(request_cost.STRATEGIES)
    for outcome in outcomes:
        assert outcome.first_look.total >= 1
        assert outcome.kinds["done"] == 5  # every batch ended exactly once
    rows = _table_rows(output)
    assert [row[0] for row in rows if row[0] in request_cost.STRATEGIES] == [
        "per_id",
        "sweep",
        "auto",
    ]


def test_scale_measures_every_size(capsys: pytest.CaptureFixture[str]) -> None:
    """The scale benchmark gives memory and CPU figures for each size, tracker and watcher."""
    figures = scale.main(["--sizes", "20", "40", "--polls", "50"])
    output = capsys.readouterr().out
    assert [f.batches for f in figures] == [20, 40]
    assert all(f.tracker_bytes > 0 and f.watcher_bytes > 0 for f in figures)
    assert all(f.tracker_ns > 0 and f.watcher_ns > 0 for f in figures)
    assert [row[0] for row in _table_rows(output)] == ["20", "40"]


def test_latency_samples_every_setup(capsys: pytest.CaptureFixture[str]) -> None:
    """The latency benchmark collects the asked samples for each setup, none negative."""
    results = latency.main(["--samples", "3"])
    output = capsys.readouterr().out
    assert [r.setup for r in results] == list(latency.SETUPS)
    assert all(len(r.latencies) == 3 and min(r.latencies) >= 0 for r in results)
    assert len(_table_rows(output)) == len(latency.SETUPS)


def test_job_makespan_runs_both_contenders(capsys: pytest.CaptureFixture[str]) -> None:
    """The makespan benchmark runs the job and the naive chunks and prints one row per size."""
    results = job_makespan.main(["--sizes", "40,1200"])
    rows = _table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["40", "1200"]
    assert all(r["job"] > 0 and r["naive"] > 0 for r in results)
    assert results[1]["naive_batches"] == 2
