"""The create request's JSON schema, as TwelveLabs' OpenAPI spec gives it, and a checker.

`CREATE_REQUEST` is the spec's ``CreateAnalyzeBatchRequest`` with every
``$ref`` resolved and the descriptions left out, plus the bounds its prose
states (``minimum``, ``maximum``, ``minItems``, ``maxItems``, ``pattern``) and
one keyword of our own, ``x-exactly-one-of``, for "provide exactly one of".
A test derives the spec's schema from ``openapi.json`` and compares it with this
one minus `PROSE_KEYWORDS`, so the two cannot drift apart.

`check` walks a decoded JSON value along the schema only (never into free-form
values such as ``json_schema``), so its depth is the schema's, whatever the
body's. Unknown properties are allowed, as the spec does not forbid them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._sim_errors import SimulatorError, bad_request

Schema = Mapping[str, Any]

# Keywords taken from the spec's prose rather than its schemas.
PROSE_KEYWORDS = frozenset(
    {"minimum", "maximum", "minItems", "maxItems", "pattern", "x-exactly-one-of"}
)
_MISSING = "parameter_not_provided"
# The real API most likely wants a 24-hex asset ID; the simulator accepts any
# short token so that tests can name their assets (see docs/simulator.md).
ASSET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CUSTOM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TIME_FORMATS = ["seconds", "hh:mm:ss", "hh:mm:ss.fff"]


def _number(**bounds: float) -> dict[str, Any]:
    return {"type": "number", "format": "double", **bounds}


MEDIA_SOURCE: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "media_type": {"type": "string", "enum": ["image"]},
        "url": {"type": "string", "format": "uri"},
        "asset_id": {"type": "string", "pattern": ASSET_ID_PATTERN},
        "base64_string": {"type": "string"},
    },
    "required": ["name", "media_type"],
    "x-exactly-one-of": ["url", "asset_id", "base64_string"],
}
PROMPT: Schema = {
    "type": "object",
    "properties": {
        "input_text": {"type": "string"},
        "media_sources": {"type": "array", "items": MEDIA_SOURCE, "maxItems": 4},
    },
    "required": ["input_text"],
}
SEGMENT_FIELD: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {
            "type": "string",
            "enum": ["string", "boolean", "number", "integer", "array", "timestamp"],
        },
        "description": {"type": "string"},
        "format": {"type": "string", "enum": TIME_FORMATS},
        "enum": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
        "items": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["string", "number", "boolean", "integer"]}
            },
            "required": ["type"],
        },
    },
    "required": ["name", "type", "description"],
}
TIME_RANGE: Schema = {
    "type": "object",
    "properties": {"start_time": _number(), "end_time": _number()},
    "required": ["start_time", "end_time"],
}
SEGMENT_DEFINITION: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "description": {"type": "string"},
        "fields": {"type": "array", "items": SEGMENT_FIELD},
        "media_sources": {"type": "array", "items": MEDIA_SOURCE, "maxItems": 4},
        "time_ranges": {"type": "array", "items": TIME_RANGE},
    },
    "required": ["id", "description"],
}
RESPONSE_FORMAT: Schema = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["json_schema", "segment_definitions"]},
        "json_schema": {"type": "object", "properties": {}},
        "segment_definitions": {
            "type": "array",
            "items": SEGMENT_DEFINITION,
            "minItems": 1,
            "maxItems": 20,
        },
        "segment_time_format": {"type": "string", "enum": TIME_FORMATS},
    },
    "required": ["type"],
}
OPTIONS: Mapping[str, Schema] = {
    "prompt": PROMPT,
    "response_format": RESPONSE_FORMAT,
    "temperature": _number(minimum=0, maximum=1),
    "max_tokens": {"type": "integer"},  # its range depends on the mode: a prose rule
    "min_segment_duration": _number(minimum=2),
    "max_segment_duration": _number(minimum=2),
    "start_time": _number(minimum=0),
    "end_time": _number(),
}
BATCH_DEFAULTS: Schema = {"type": "object", "properties": dict(OPTIONS)}
BATCH_ITEM: Schema = {
    "type": "object",
    "properties": {
        "video": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["asset_id"]},
                "asset_id": {"type": "string", "pattern": ASSET_ID_PATTERN},
            },
            "required": ["type", "asset_id"],
        },
        "custom_id": {"type": "string", "pattern": CUSTOM_ID_PATTERN},
        **OPTIONS,
    },
    "required": ["video"],
}
CREATE_REQUEST: Schema = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string", "enum": ["pegasus1.5"]},
        "analysis_mode": {"type": "string", "enum": ["general", "time_based_metadata"]},
        "defaults": BATCH_DEFAULTS,
        "requests": {"type": "array", "items": BATCH_ITEM, "minItems": 1, "maxItems": 1000},
    },
    "required": ["model_name", "analysis_mode", "requests"],
}

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
}


def check(value: object, schema: Schema, path: str) -> None:
    """Raise a 400 `SimulatorError` naming the first place where ``value`` breaks ``schema``."""
    _check_type(value, schema, path)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(choice) for choice in schema["enum"])
        raise bad_request(f"{path} must be one of {choices}.")
    if isinstance(value, Mapping):
        _check_object(value, schema, path)
    elif isinstance(value, list):
        _check_array(value, schema, path)
    elif isinstance(value, str):
        _check_string(value, schema, path)
    elif isinstance(value, int | float):
        _check_bounds(value, schema, path)


def _check_type(value: object, schema: Schema, path: str) -> None:
    kind = schema["type"]
    if not _is_type(value, kind):
        if kind == "integer" and isinstance(value, float):
            raise bad_request(
                f"{path} must be an integer written without a fraction or exponent, not {value!r}."
            )
        raise bad_request(f"{path} must be {_TYPE_NAMES[kind]}, not {_json_type(value)}.")
    if schema.get("format") == "double" and not math.isfinite(_as_float(value)):
        raise bad_request(f"{path} is out of range for a double.")


def _is_type(value: object, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    checks: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
    }
    return isinstance(value, checks[kind])


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]  # checked to be a number first
    except OverflowError:  # an integer beyond any double
        return math.inf


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _check_object(value: Mapping[str, Any], schema: Schema, path: str) -> None:
    prefix = f"{path}." if path else ""
    for key in schema.get("required", ()):
        if key not in value:
            raise bad_request(f"{prefix}{key} is required.", _MISSING)
    properties: Mapping[str, Schema] = schema.get("properties", {})
    for key, sub in properties.items():
        if key in value:
            check(value[key], sub, prefix + key)
    choices = schema.get("x-exactly-one-of")
    if choices is not None and sum(key in value for key in choices) != 1:
        names = ", ".join(choices)
        raise bad_request(f"{path} needs exactly one of {names}.")


def _check_array(value: list[Any], schema: Schema, path: str) -> None:
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if len(value) < low or (high is not None and len(value) > high):
        span = f"{low} to {high}" if high is not None else f"at least {low}"
        raise bad_request(f"{path} takes {span} entries, not {len(value)}.")
    items = schema.get("items")
    if items is not None:
        for index, item in enumerate(value):
            check(item, items, f"{path}[{index}]")


def _check_string(value: str, schema: Schema, path: str) -> None:
    pattern = schema.get("pattern")
    if pattern is not None and not _matches(pattern, value):
        raise bad_request(f"{path} is malformed: it must match {pattern}.")
    if schema.get("format") == "uri" and not _is_url(value):
        raise bad_request(f"{path} must be an absolute https:// URL.")


def _matches(pattern: str, value: str) -> bool:
    # Anchored patterns only; fullmatch, because "$" in Python matches before a final newline.
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname)


def _check_bounds(value: float, schema: Schema, path: str) -> None:
    # Comparisons only: Python compares a huge int with a float exactly, while
    # arithmetic on them could overflow.
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and value < low:
        raise bad_request(f"{path} must be at least {low}.")
    if high is not None and value > high:
        raise bad_request(f"{path} must be at most {high}.")


__all__ = ["CREATE_REQUEST", "PROSE_KEYWORDS", "SimulatorError", "check"]
