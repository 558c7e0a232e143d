"""Validation of a create request body, as the API documents it (pure, no IO).

`decode_body` turns the raw bytes into JSON or raises a 400; `parse_create`
turns a decoded body into a `CreateSpec` or raises a 400 `SimulatorError`.
First the body is checked against the spec's schemas (`_sim_schema`): types,
enums, required fields, "exactly one of" and the bounds the prose states. Then
the rules that span fields: the mode's needs and refusals, the per-mode
``max_tokens`` range, ``start_time`` < ``end_time``, segment durations, time
ranges, and unique ``custom_id`` and segment ``id`` values. Each item's
options are its own where it sets them and the defaults' otherwise, field by
field; ``prompt`` and ``response_format`` are replaced whole, never merged.
Codes for the 400s are not documented; the general ones are used.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._sim_errors import SimulatorError, bad_request
from ._sim_schema import CREATE_REQUEST, OPTIONS, check

MODEL_NAME = "pegasus1.5"
ANALYSIS_MODES = ("general", "time_based_metadata")
MAX_TOKENS = {"general": (512, 98_304), "time_based_metadata": (2_048, 98_304)}
MIN_TIME_RANGE = 2.0
# Field names every segment carries already; a timestamp field may not reuse them.
RESERVED_FIELD_NAMES = frozenset({"start_time", "end_time", "metadata"})
_MISSING = "parameter_not_provided"
Options = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One accepted request: its asset, its custom_id, and what shape of output it wants."""

    asset_id: str
    custom_id: str | None
    output: str  # "text", "json_schema" or "segments"
    segment_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CreateSpec:
    """An accepted create request."""

    model_name: str
    analysis_mode: str
    items: tuple[ItemSpec, ...]


def decode_body(raw: bytes) -> object:
    """The JSON value of a request body, or a 400 for anything that is not plain JSON.

    Refuses ``NaN`` and ``Infinity`` (not JSON), integers too long to read, and
    nesting deeper than the parser's recursion limit.
    """
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise bad_request("The request body is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise bad_request(f"The request body is not valid JSON: {_short(exc)}") from None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _short(exc: ValueError) -> str:
    if "integer string conversion" in str(exc):
        return "a number has too many digits."
    return str(exc).split(";")[0][:200]


def parse_create(body: object) -> CreateSpec:
    """Check a create body; raise a 400 `SimulatorError` naming the first problem."""
    if not isinstance(body, Mapping):
        raise bad_request("The request body must be a JSON object.")
    check(body, CREATE_REQUEST, "")
    mode: str = body["analysis_mode"]
    defaults: Options = body.get("defaults", {})
    _check_own_options(defaults, mode, "defaults")
    items = tuple(
        _parse_item(raw, f"requests[{index}]", mode, defaults)
        for index, raw in enumerate(body["requests"])
    )
    _check_unique([item.custom_id for item in items if item.custom_id is not None], "custom_id")
    return CreateSpec(model_name=MODEL_NAME, analysis_mode=mode, items=items)


def _parse_item(raw: Options, where: str, mode: str, defaults: Options) -> ItemSpec:
    _check_own_options(raw, mode, where)
    effective = {key: raw[key] if key in raw else defaults.get(key) for key in OPTIONS}
    source = {key: where if key in raw else "defaults" for key in OPTIONS}
    output, segment_ids = _output_shape(effective, mode, where)
    _check_window(effective, source, where)
    return ItemSpec(raw["video"]["asset_id"], raw.get("custom_id"), output, segment_ids)


def _check_own_options(options: Options, mode: str, where: str) -> None:
    """Rules on one options object alone, whatever the others set."""
    if "response_format" in options:
        _check_response_format(options["response_format"], mode, f"{where}.response_format")
    if mode == "time_based_metadata" and "prompt" in options:
        raise bad_request(f"{where}.prompt is not supported in time_based_metadata mode.")
    if mode == "general":
        for key in ("min_segment_duration", "max_segment_duration"):
            if key in options:
                raise bad_request(f"{where}.{key} applies only to time_based_metadata mode.")
    low, high = MAX_TOKENS[mode]
    max_tokens = options.get("max_tokens")
    if max_tokens is not None and not low <= max_tokens <= high:
        raise bad_request(f"{where}.max_tokens must be {low} to {high} in {mode} mode.")


def _output_shape(options: Options, mode: str, where: str) -> tuple[str, tuple[str, ...]]:
    """What the item will produce, from its effective prompt and response format."""
    response_format = options["response_format"]
    if mode == "general":
        if options["prompt"] is None:
            raise bad_request(f"{where}.prompt is required in general mode.", _MISSING)
        return ("text" if response_format is None else "json_schema"), ()
    if response_format is None:
        raise bad_request(
            f"{where}.response_format with type segment_definitions is required "
            "in time_based_metadata mode.",
            _MISSING,
        )
    return "segments", tuple(d["id"] for d in response_format["segment_definitions"])


def _check_response_format(response_format: Options, mode: str, where: str) -> None:
    kind = response_format["type"]
    wanted = "json_schema" if mode == "general" else "segment_definitions"
    if kind != wanted:
        raise bad_request(f"{where}.type must be {wanted} in {mode} mode.")
    if kind not in response_format:
        raise bad_request(f"{where}.{kind} is required with type {kind}.", _MISSING)
    for key in _NOT_WITH[kind]:
        if key in response_format:
            raise bad_request(f"{where}.{key} does not apply to type {kind}.")
    if kind == "segment_definitions":
        _check_definitions(response_format["segment_definitions"], f"{where}.segment_definitions")


_NOT_WITH = {
    "json_schema": ("segment_definitions", "segment_time_format"),
    "segment_definitions": ("json_schema",),
}


def _check_definitions(definitions: Sequence[Options], where: str) -> None:
    _check_unique([d["id"] for d in definitions], f"{where}[].id")
    for index, definition in enumerate(definitions):
        for number, field in enumerate(definition.get("fields", ())):
            _check_field(field, f"{where}[{index}].fields[{number}]")
        _check_time_ranges(definition.get("time_ranges", ()), f"{where}[{index}].time_ranges")


def _check_field(field: Options, where: str) -> None:
    """The rules between a segment field's ``type`` and its other keys."""
    kind = field["type"]
    if kind == "timestamp":
        if "format" not in field:
            raise bad_request(f"{where}.format is required for timestamp fields.", _MISSING)
        for key in ("enum", "items"):
            if key in field:
                raise bad_request(f"{where}.{key} is not supported for timestamp fields.")
        if field["name"] in RESERVED_FIELD_NAMES:
            raise bad_request(f"{where}.name {field['name']!r} is reserved.")
        return
    if "format" in field:
        raise bad_request(f"{where}.format applies only to timestamp fields.")
    if (kind == "array") != ("items" in field):
        message = "is required for" if kind == "array" else "applies only to"
        raise bad_request(f"{where}.items {message} array fields.")


def _check_time_ranges(ranges: Sequence[Options], where: str) -> None:
    """Each range at least 2 s long; ranges of one definition do not overlap."""
    ordered = sorted((r["start_time"], r["end_time"]) for r in ranges)
    for start, end in ordered:
        if not end - start >= MIN_TIME_RANGE:  # both finite doubles: no overflow
            raise bad_request(f"{where}: each range must span at least 2 seconds.")
    for (_, end), (start, _) in itertools.pairwise(ordered):
        if start < end:
            raise bad_request(f"{where}: ranges must not overlap.")


def _check_window(options: Options, source: Mapping[str, str], where: str) -> None:
    """start_time before end_time, min before max, and time ranges alone."""
    start, end = options["start_time"], options["end_time"]
    if end is not None and not (start or 0) < end:
        raise bad_request(f"{source['end_time']}.end_time must be greater than start_time.")
    low, high = options["min_segment_duration"], options["max_segment_duration"]
    if low is not None and high is not None and high < low:
        raise bad_request(f"{where}.max_segment_duration must be at least min_segment_duration.")
    response_format = options["response_format"] or {}
    definitions = response_format.get("segment_definitions", ())
    if any(d.get("time_ranges") for d in definitions):
        clashing = [key for key in _EXCLUSIVE_WITH_TIME_RANGES if options[key] is not None]
        if clashing:
            raise bad_request(
                f"{where}: segment_definitions[].time_ranges cannot be combined with "
                f"{', '.join(clashing)}."
            )


_EXCLUSIVE_WITH_TIME_RANGES = (
    "start_time",
    "end_time",
    "min_segment_duration",
    "max_segment_duration",
)


def _check_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise bad_request(f"{what} {value!r} appears more than once.")
        seen.add(value)


__all__ = [
    "ANALYSIS_MODES",
    "CreateSpec",
    "ItemSpec",
    "SimulatorError",
    "decode_body",
    "parse_create",
]
