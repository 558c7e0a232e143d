"""A job's options are typed: one `JobOptions` for `Jobs.run`, checked against `Job`'s keywords,
so that a misspelt option fails type checking (the ``type: ignore`` below would be an unused
ignore under ``mypy --strict`` if it did not) and fails at run time before anything is read."""

from __future__ import annotations

import inspect
import typing

import pytest

from asyncbatch import Client, Job, JobOptions

pytestmark = pytest.mark.anyio

KEY = "sim-key"


def test_job_options_are_exactly_the_jobs_keywords() -> None:
    """Every keyword of `Job` is a `JobOptions` key, and back."""
    parameters = inspect.signature(Job.__init__).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(JobOptions.__annotations__) == keywords


def test_job_options_have_the_jobs_types() -> None:
    """Each `JobOptions` key has the type of the `Job` keyword of that name."""
    hints = typing.get_type_hints(Job.__init__)
    options = typing.get_type_hints(JobOptions)
    assert options == {name: hints[name] for name in options}


async def test_a_misspelt_job_option_is_refused_before_the_job_starts() -> None:
    """`jobs.run` with an unknown option raises `TypeError` naming it; no request is read."""
    read: list[int] = []

    def requests() -> typing.Iterator[dict[str, object]]:
        read.append(1)
        yield {"video": {"asset_id": "a"}}

    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with pytest.raises(TypeError, match="max_atempts"):
            client.jobs.run(requests(), max_atempts=2)  # type: ignore[call-arg]
    assert read == []


@pytest.mark.parametrize(("option", "value"), [("max_attempts", 0), ("max_active", 0)])
async def test_a_job_needs_one_attempt_and_one_slot(option: str, value: int) -> None:
    """`max_attempts` or `max_active` below 1 is a `ValueError` when the job is made."""
    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with pytest.raises(ValueError, match="at least 1"):
            client.jobs.run([], **{option: value})  # type: ignore[arg-type]
