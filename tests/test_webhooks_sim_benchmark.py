"""The webhook latency benchmark runs end to end at a tiny size and counts what it should."""

from __future__ import annotations

import pytest

from benchmarks import webhook_latency


def test_the_benchmark_compares_every_mode_and_counts_deliveries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each mode yields a latency per batch; without faults a batch of N items costs N + 1
    webhook POSTs, polling alone none; the table shows every mode."""
    argv = ["--batches", "2", "--items", "3", "--seeds", "1", "--item-seconds", "20"]
    outcomes = webhook_latency.main(argv)
    output = capsys.readouterr().out
    assert len(outcomes) == len(webhook_latency.modes(0.2))
    for outcome in outcomes:
        assert len(outcome.latencies) == 2
        assert min(outcome.latencies) >= 0
        assert outcome.mode.name in output
        if not outcome.mode.webhooks:
            assert outcome.posts_per_batch == 0
        elif outcome.mode.faults is None:
            assert outcome.posts_per_batch == 4
            assert max(outcome.latencies) < 1.0  # the delivery, not a poll, brought the done
    assert "virtual time" in output
