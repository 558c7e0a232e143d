"""The simulator's options are declared once, in `SimulatorConfig`: `Simulator(...)` takes its
fields as keywords, `asyncbatch simulate` and `demo` make their flags from them, and
docs/simulator.md lists them.

A misspelt option fails `mypy --strict`: the call below carries a ``# type: ignore[call-arg]``
that strict mypy (``warn_unused_ignores``) would reject if the keywords became untyped.
"""

from __future__ import annotations

import argparse
import inspect
import io
import re
from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest

from asyncbatch._cli.args import UsageError, parse
from asyncbatch._cli.demo import simulator_config
from asyncbatch.testing import (
    ManualClock,
    ScaledClock,
    Simulator,
    SimulatorConfig,
    WebhookFaults,
    loop_clock,
)
from asyncbatch.testing._sim_config import config_flags

KEY = "sim-key"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"


def _parse(*argv: str) -> argparse.Namespace:
    return parse(list(argv), io.StringIO(), io.StringIO())


def test_the_simulators_keywords_are_exactly_the_configs_fields() -> None:
    """Same names, order, defaults and annotations: the signature is the dataclass's."""
    parameters = list(inspect.signature(Simulator).parameters.values())
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    declared = [
        (f.name, inspect.Parameter.empty if f.default is MISSING else f.default, f.type)
        for f in fields(SimulatorConfig)
    ]
    assert [(p.name, p.default, p.annotation) for p in parameters] == declared


def test_a_misspelt_simulator_option_is_refused() -> None:
    """A typo is a type error, and a `TypeError` before anything is built."""
    with pytest.raises(TypeError, match="item_second"):
        Simulator(api_key=KEY, item_second=3.0)  # type: ignore[call-arg]


def test_a_simulator_runs_with_the_config_it_was_given() -> None:
    """`from_config` and the keywords make the same simulator; ``sim.config`` is that config."""
    config = SimulatorConfig(api_key=KEY, seed=7, item_seconds=3.0, max_active=2)
    assert Simulator.from_config(config).config == config
    assert Simulator(api_key=KEY, seed=7, item_seconds=3.0, max_active=2).config == config


def test_simulate_has_a_flag_for_each_flag_field_with_its_default() -> None:
    """Parsing no flags gives the config's defaults (the command's port is 8000), and every
    option of the command but the key is a config field."""
    args = _parse("simulate")
    assert simulator_config(args, KEY) == SimulatorConfig(api_key=KEY, port=8000)
    shown = set(vars(args)) - {"command", "api_key"}
    assert shown == {name for name, _, _ in config_flags()}


def test_simulate_flags_reach_the_config() -> None:
    """Each flag sets its field, ``--webhook-url`` once per URL."""
    args = _parse(
        "simulate", "--host", "localhost", "--port", "0", "--seed", "4", "--time-scale", "2.5",
        "--item-seconds", "7", "--item-failure-rate", "0.25", "--expire-after", "60",
        "--fault-rate", "0.1", "--webhook-url", "http://a/h", "--webhook-url", "http://b/h",
        "--webhook-secret", "whsec", "--webhook-fault-rate", "0.5",
    )  # fmt: skip
    config = simulator_config(args, KEY)
    assert config == SimulatorConfig(
        api_key=KEY, host="localhost", port=0, seed=4, time_scale=2.5, item_seconds=7.0,
        item_failure_rate=0.25, expire_after=60.0, fault_rate=0.1,
        webhook_urls=("http://a/h", "http://b/h"), webhook_secret="whsec", webhook_fault_rate=0.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--item-failure-rate", "1.5", "must be between 0 and 1"),
        ("--time-scale", "0", "must be a positive number"),
        ("--port", "70000", "must be 0 to 65535"),
        ("--webhook-url", "ftp://x/h", "not an http or https URL"),
        ("--seed", "x", "not a whole number"),
    ],
)
def test_simulate_flags_check_their_values(flag: str, value: str, message: str) -> None:
    """A field's flag kind decides how its value is checked, with the usual messages."""
    with pytest.raises(UsageError, match=message):
        _parse("simulate", flag, value)


def test_demo_takes_the_configs_flags_with_its_own_defaults() -> None:
    """``demo --seed`` and ``--time-scale`` are the config's, at 9 and 10x."""
    args = _parse("demo")
    assert (args.seed, args.time_scale) == (9, 10.0)
    assert _parse("demo", "--time-scale", "100").time_scale == 100.0


def test_time_scale_speeds_up_the_default_clock() -> None:
    """``time_scale`` runs the loop's clock faster; a clock of one's own excludes it."""
    assert Simulator(api_key=KEY).clock is loop_clock
    scaled = Simulator(api_key=KEY, time_scale=10.0).clock
    assert isinstance(scaled, ScaledClock)
    assert scaled.scale == 10.0
    with pytest.raises(ValueError, match="clock or a time_scale"):
        Simulator(api_key=KEY, clock=ManualClock(), time_scale=10.0)
    with pytest.raises(ValueError, match="time_scale must be positive"):
        SimulatorConfig(api_key=KEY, time_scale=0.0)


def test_webhook_fault_rate_is_shorthand_for_webhook_faults() -> None:
    """Duplicates at the rate, the two signature faults at half of it; not both ways at once."""
    config = SimulatorConfig(api_key=KEY, webhook_fault_rate=0.4)
    assert config.webhook_fault_rates() == WebhookFaults(0.2, 0.2, 0.4)
    faults = WebhookFaults(duplicate=1.0)
    assert replace(config, webhook_fault_rate=0.0, webhook_faults=faults).webhook_fault_rates() == (
        faults
    )
    with pytest.raises(ValueError, match="not both"):
        SimulatorConfig(api_key=KEY, webhook_faults=faults, webhook_fault_rate=0.1)


def test_the_docs_list_every_option_and_flag() -> None:
    """docs/simulator.md's tables name every field, and every flag with its field."""
    text = DOCS.read_text()
    options = text[text.index("## Options") : text.index("## Command line")]
    listed = set(re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", options, re.MULTILINE))
    named = {name for cell in listed for name in re.findall(r"`(\w+)`", cell)}
    assert named == {f.name for f in fields(SimulatorConfig)}
    command = text[text.index("## Command line") : text.index("## Limits")]
    for name, _, _ in config_flags():
        assert re.search(rf"\| `--[\w-]+`[^|]* \| `{name}` \|", command), name
