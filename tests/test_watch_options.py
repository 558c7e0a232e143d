"""The watcher's options are typed: one `WatchOptions` for `watch`, `wait` and `create_and_wait`,
the cadence as a `PollPolicy`, one word (``timeout``) for relative time limits.

A misspelt option fails `mypy --strict`: each call below carries a ``# type: ignore[call-arg]``,
and the project's mypy configuration (strict, so ``warn_unused_ignores``) fails on an ignore
that no longer silences anything, which is what would happen if the options became untyped
again (``**options: Any``).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

import anyio
import pytest

from asyncbatch import (
    Client,
    EventKind,
    PollPolicy,
    WaitTimeoutError,
    Watcher,
    WatchOptions,
)
from asyncbatch.testing import Simulator

pytestmark = pytest.mark.anyio

KEY = "sim-key"
DEPRECATED = {"deadline"}


def test_watch_options_are_exactly_the_watchers_keywords() -> None:
    """Every keyword of `Watcher` (but the deprecated ones) is a `WatchOptions` key, and back."""
    parameters = inspect.signature(Watcher.__init__).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(WatchOptions.__annotations__) == keywords - DEPRECATED
    assert keywords >= DEPRECATED


def test_watch_options_have_the_watchers_types() -> None:
    """Each `WatchOptions` key has the type of the `Watcher` keyword of that name."""
    hints = typing.get_type_hints(Watcher.__init__)
    options = typing.get_type_hints(WatchOptions)
    assert options == {name: hints[name] for name in options}


async def test_a_misspelt_watch_option_fails_at_run_time_too() -> None:
    """`watch`, `wait` and `create_and_wait` refuse an unknown option before any request."""
    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with pytest.raises(TypeError, match="min_intervall"):
            client.watch(["a" * 24], min_intervall=2)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="min_intervall"):
            await client.batches.wait("a" * 24, min_intervall=2)  # type: ignore[call-arg]


async def test_create_and_wait_refuses_a_misspelt_option_before_creating_a_batch() -> None:
    """A typo in `create_and_wait`'s watch options is refused before the (billed) POST."""
    async with (
        Simulator(api_key=KEY, seed=1, item_seconds=5.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        requests = [{"video": {"type": "asset_id", "asset_id": "a" * 24}}]
        defaults = {"prompt": {"input_text": "Summarise."}}
        with pytest.raises(TypeError, match="timeuot"):
            await client.batches.create_and_wait(
                requests,
                defaults=defaults,
                timeuot=5,  # type: ignore[call-arg]
            )
        with pytest.raises(ValueError, match="max_concurrency"):
            await client.batches.create_and_wait(requests, defaults=defaults, max_concurrency=0)
        assert sim.stats.total_requests == 0
        final = await client.batches.create_and_wait(requests, defaults=defaults, timeout=600.0)
        assert final.status == "completed"


async def test_timeout_ends_watching_with_wait_timeout_error() -> None:
    """``timeout=`` gives every open batch an `error` with WaitTimeoutError after that long."""
    async with (
        Simulator(api_key=KEY, seed=2, item_seconds=1000.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        started = anyio.current_time()
        async with client.watch([batch_id], timeout=50.0, min_interval=5.0) as watcher:
            events = [event async for event in watcher]
        assert events[-1].kind is EventKind.ERROR
        assert isinstance(events[-1].error, WaitTimeoutError)
        assert 50.0 <= anyio.current_time() - started < 60.0


async def test_the_deprecated_deadline_still_works_and_warns() -> None:
    """``Watcher(deadline=)`` acts as ``timeout=`` for one more release, with a warning."""
    async with (
        Simulator(api_key=KEY, seed=3, item_seconds=1000.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        with pytest.warns(DeprecationWarning, match="timeout"):
            watcher = client.watch([batch_id], deadline=30.0)  # type: ignore[call-arg]
        async with watcher:
            events = [event async for event in watcher]
        assert isinstance(events[-1].error, WaitTimeoutError)
        assert "30 s" in str(events[-1].error)


async def test_deadline_and_timeout_together_are_refused() -> None:
    """Giving both the old and the new name is ambiguous: TypeError, after the warning."""
    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with (
            pytest.warns(DeprecationWarning, match="deadline"),
            pytest.raises(TypeError, match="timeout"),
        ):
            Watcher(client, [], deadline=1.0, timeout=2.0)


async def test_a_poll_policy_sets_the_cadence() -> None:
    """``poll=PollPolicy(...)`` sets how often an idle batch is polled: here every 10 s."""
    policy = PollPolicy(min_interval=10.0, max_interval=10.0, jitter=0.0, stagger=0.0)
    async with (
        Simulator(api_key=KEY, seed=4, item_seconds=1000.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        async with client.watch([batch_id], poll=policy, timeout=95.0) as watcher:
            _ = [event async for event in watcher]
            polls = watcher.statistics().polls
        assert polls == 10  # at 0, 10, ..., 90 s


def test_the_cadence_keywords_are_exactly_the_poll_policys_fields() -> None:
    """Each `PollPolicy` field is a `Watcher` keyword of its type (or None, which keeps the
    policy's value): the shorthand cannot drift from the policy it abbreviates."""
    hints = typing.get_type_hints(Watcher.__init__)
    policy = typing.get_type_hints(PollPolicy)
    assert set(policy) == {f.name for f in dataclasses.fields(PollPolicy)}
    assert {name: hints[name] for name in policy} == {
        name: kind | None for name, kind in policy.items()
    }


async def _polls(**options: typing.Any) -> tuple[int, list[EventKind]]:
    async with (
        Simulator(api_key=KEY, seed=4, item_seconds=20.0) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        batch_id = sim.create_batch(3)["batch_id"]
        async with client.watch([batch_id], seed=1, timeout=300.0, **options) as watcher:
            kinds = [event.kind async for event in watcher]
            return watcher.statistics().polls, kinds


async def test_the_keywords_and_the_policy_spell_the_same_cadence() -> None:
    """``max_interval=7, jitter=0`` and ``poll=PollPolicy(max_interval=7, jitter=0)`` poll at
    the same moments and report the same events."""
    keywords = await _polls(min_interval=2.0, max_interval=7.0, jitter=0.0)
    policy = await _polls(poll=PollPolicy(min_interval=2.0, max_interval=7.0, jitter=0.0))
    assert keywords == policy
    assert keywords[1][-1] is EventKind.DONE
    assert keywords != await _polls(min_interval=2.0, max_interval=30.0, jitter=0.0)  # it counts


async def test_a_cadence_keyword_replaces_that_field_of_the_policy() -> None:
    """``max_interval=`` beside ``poll=`` replaces the policy's field and is validated with it."""
    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with pytest.raises(ValueError, match="min_interval <= max_interval"):
            client.watch([], poll=PollPolicy(min_interval=10.0, max_interval=20.0), max_interval=5)
        client.watch([], poll=PollPolicy(min_interval=10.0, max_interval=20.0), max_interval=15)
