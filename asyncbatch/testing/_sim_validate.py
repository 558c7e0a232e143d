"""Validation of a create request body, as the API documents it (pure, no IO).

`parse_create` turns a decoded JSON body into a `CreateSpec` or raises a 400
`SimulatorError`. The rules follow the reference: model ``pegasus1.5`` only,
the two analysis modes and what each requires, 1 to 1,000 requests, the video
source, ``custom_id`` format and uniqueness, and the numeric ranges of the
options. Codes for the 400s are not documented; the general ones are used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._sim_errors import SimulatorError, bad_request

MODEL_NAME = "pegasus1.5"
ANALYSIS_MODES = ("general", "time_based_metadata")
MAX_REQUESTS = 1000
MAX_MEDIA_SOURCES = 4
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The real API most likely wants a 24-hex asset ID; the simulator accepts any
# short token so that tests can name their assets (see docs/simulator.md).
ASSET_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOKENS = {"general": (512, 98_304), "time_based_metadata": (2_048, 98_304)}
_MISSING = "parameter_not_provided"


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


def parse_create(body: object) -> CreateSpec:
    """Check a create body; raise a 400 `SimulatorError` naming the first problem."""
    if not isinstance(body, Mapping):
        raise bad_request("The request body must be a JSON object.")
    model_name = _required(body, "model_name")
    if model_name != MODEL_NAME:
        raise bad_request(f"model_name must be {MODEL_NAME!r}: batch analysis needs Pegasus 1.5.")
    mode = _required(body, "analysis_mode")
    if mode not in ANALYSIS_MODES:
        raise bad_request(f"analysis_mode must be one of {', '.join(ANALYSIS_MODES)}.")
    defaults = body.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise bad_request("defaults must be an object.")
    _check_options(defaults, mode, "defaults")
    requests = _required(body, "requests")
    if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_REQUESTS:
        raise bad_request(f"requests must be an array of 1 to {MAX_REQUESTS} items.")
    items = tuple(_parse_item(raw, index, mode, defaults) for index, raw in enumerate(requests))
    _check_unique([item.custom_id for item in items if item.custom_id is not None])
    return CreateSpec(model_name=MODEL_NAME, analysis_mode=str(mode), items=items)


def _required(body: Mapping[str, Any], key: str, where: str = "") -> Any:
    value = body.get(key)
    if value is None:
        raise bad_request(f"{where}{key} is required.", _MISSING)
    return value


def _parse_item(raw: object, index: int, mode: str, defaults: Mapping[str, Any]) -> ItemSpec:
    where = f"requests[{index}]."
    if not isinstance(raw, Mapping):
        raise bad_request(f"requests[{index}] must be an object.")
    video = _required(raw, "video", where)
    if not isinstance(video, Mapping) or video.get("type") != "asset_id":
        raise bad_request(f"{where}video.type must be 'asset_id'.")
    asset_id = video.get("asset_id")
    if not isinstance(asset_id, str) or not ASSET_ID.fullmatch(asset_id):
        raise bad_request(f"{where}video.asset_id is malformed.")
    custom_id = raw.get("custom_id")
    if custom_id is not None and not (
        isinstance(custom_id, str) and CUSTOM_ID.fullmatch(custom_id)
    ):
        raise bad_request(f"{where}custom_id must be 1-64 characters of A-Z, a-z, 0-9, _ and -.")
    _check_options(raw, mode, where)
    output, segment_ids = _output_shape(raw, mode, defaults, where)
    return ItemSpec(asset_id, custom_id, output, segment_ids)


def _output_shape(
    item: Mapping[str, Any], mode: str, defaults: Mapping[str, Any], where: str
) -> tuple[str, tuple[str, ...]]:
    """What the item will produce; the item's whole object wins over the default's."""
    prompt = item.get("prompt") or defaults.get("prompt")
    response_format = item.get("response_format") or defaults.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if mode == "general":
        if not isinstance(prompt, Mapping) or not isinstance(prompt.get("input_text"), str):
            raise bad_request(f"{where}prompt.input_text is required in general mode.", _MISSING)
        if kind not in (None, "json_schema"):
            raise bad_request(f"{where}response_format.type must be json_schema in general mode.")
        return ("json_schema" if kind else "text"), ()
    if prompt is not None:
        raise bad_request(f"{where}prompt is not supported in time_based_metadata mode.")
    if kind != "segment_definitions" or not isinstance(response_format, Mapping):
        raise bad_request(
            f"{where}response_format.type must be segment_definitions in time_based_metadata mode.",
            _MISSING,
        )
    definitions = response_format.get("segment_definitions")
    if not isinstance(definitions, list) or not 1 <= len(definitions) <= 20:
        raise bad_request(f"{where}response_format.segment_definitions needs 1 to 20 entries.")
    ids = tuple(
        str(d.get("id", i)) if isinstance(d, Mapping) else str(i) for i, d in enumerate(definitions)
    )
    return "segments", ids


def _check_options(options: Mapping[str, Any], mode: str, where: str) -> None:
    """The numeric ranges shared by ``defaults`` and each item."""
    temperature = options.get("temperature")
    if temperature is not None and not _number_between(temperature, 0, 1):
        raise bad_request(f"{where}temperature must be between 0 and 1.")
    max_tokens = options.get("max_tokens")
    low, high = MAX_TOKENS[mode]
    if max_tokens is not None and not (isinstance(max_tokens, int) and low <= max_tokens <= high):
        raise bad_request(f"{where}max_tokens must be {low} to {high} in {mode} mode.")
    _check_segments(options, mode, where)
    start, end = options.get("start_time"), options.get("end_time")
    if start is not None and end is not None and not _number_between(start, 0, end - 1e-9):
        raise bad_request(f"{where}start_time must be less than end_time.")
    prompt = options.get("prompt")
    if isinstance(prompt, Mapping) and len(prompt.get("media_sources") or ()) > MAX_MEDIA_SOURCES:
        raise bad_request(f"{where}prompt.media_sources takes at most {MAX_MEDIA_SOURCES} entries.")


def _check_segments(options: Mapping[str, Any], mode: str, where: str) -> None:
    low, high = options.get("min_segment_duration"), options.get("max_segment_duration")
    if (low is not None or high is not None) and mode != "time_based_metadata":
        raise bad_request(f"{where}segment durations apply only to time_based_metadata mode.")
    for value in (low, high):
        if value is not None and not _number_between(value, 2, float("inf")):
            raise bad_request(f"{where}segment durations must be at least 2 seconds.")
    if low is not None and high is not None and high < low:
        raise bad_request(f"{where}max_segment_duration must be at least min_segment_duration.")


def _number_between(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _check_unique(custom_ids: list[str]) -> None:
    seen: set[str] = set()
    for custom_id in custom_ids:
        if custom_id in seen:
            raise bad_request(f"custom_id {custom_id!r} appears more than once in this batch.")
        seen.add(custom_id)


__all__ = ["CreateSpec", "ItemSpec", "SimulatorError", "parse_create"]
