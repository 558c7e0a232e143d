"""Request structs match the spec's schemas: what it allows can be built, nothing else is sent.

The structs' own JSON schema (msgspec's) is compared with the spec's, field by
field; generated bodies check both directions: every body the simulator (the
spec plus its prose) accepts converts and encodes back unchanged, and whatever
the structs accept encodes to a body the spec's schema accepts.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

import asyncbatch
from asyncbatch import (
    BatchDefaults,
    Client,
    CreateBatchRequest,
    InvalidRequestError,
    MediaSource,
    Prompt,
    ResponseFormat,
    SegmentDefinition,
    SegmentField,
    SegmentFieldItems,
    TimeRange,
)
from asyncbatch._models import encoder
from asyncbatch.testing import ManualClock, Simulator, SimulatorError
from asyncbatch.testing._sim_validate import parse_create

from ._spec import resolved
from .test_simulator_request_validation import IMAGE, VALID, general, mutated_bodies

SPEC_SCHEMA = resolved("CreateAnalyzeBatchRequest")
SPEC_VALIDATOR = jsonschema_rs.Draft4Validator(SPEC_SCHEMA)
KEY = "models-key"
_IGNORED = frozenset({"title", "description", "default", "additionalProperties"})
# Constraints the structs add from the spec's prose (bounds and lengths).
_PROSE = frozenset(
    {"minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern"}
)


def _struct_schema() -> Any:
    (root,), defs = msgspec.json.schema_components((CreateBatchRequest,))
    return _inline(root, defs)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """msgspec's schema with refs inlined, ``X | None`` read as X, and annotations dropped."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(defs[node["$ref"].removeprefix("#/$defs/")], defs)
    options = [o for o in node.get("anyOf", ()) if o != {"type": "null"}]
    if len(options) == 1:
        return _inline(options[0], defs)
    return {
        key: (
            {name: _inline(sub, defs) for name, sub in value.items()}
            if key == "properties"
            else _inline(value, defs)
        )
        for key, value in node.items()
        if key not in _IGNORED | _PROSE
    }


def _differences(spec: Any, ours: Any, path: str = "$") -> list[str]:
    """Where the structs' schema admits other shapes than the spec's."""
    found: list[str] = []
    spec_type, our_type = spec.get("type"), ours.get("type")
    if "enum" in spec:
        if sorted(spec["enum"]) != sorted(ours.get("enum", ())):
            found.append(f"{path}: enum {spec['enum']} vs {ours.get('enum')}")
    elif spec_type != our_type:
        found.append(f"{path}: type {spec_type} vs {our_type}")
    if spec_type == "object" and spec.get("properties"):
        found += _object_differences(spec, ours, path)
    if spec_type == "array":
        found += _differences(spec["items"], ours.get("items", {}), f"{path}[]")
    return found


def _object_differences(spec: Any, ours: Any, path: str) -> list[str]:
    found: list[str] = []
    if set(spec["properties"]) != set(ours.get("properties", {})):
        found.append(f"{path}: fields {sorted(spec['properties'])} vs {sorted(ours['properties'])}")
        return found
    # A required field with a default (VideoSource.type, MediaSource.media_type) is
    # always sent, since those structs do not omit defaults; an encoding test checks that.
    always_sent = {
        name for name, sub in ours["properties"].items() if "enum" in sub and len(sub["enum"]) == 1
    }
    if set(spec.get("required", ())) != set(ours.get("required", ())) | (
        always_sent & set(spec.get("required", ()))
    ):
        found.append(f"{path}: required {spec.get('required')} vs {ours.get('required')}")
    for name, sub in spec["properties"].items():
        found += _differences(sub, ours["properties"][name], f"{path}.{name}")
    return found


def test_request_structs_have_exactly_the_specs_fields_types_enums_and_required_keys() -> None:
    """Each request struct, at every depth, matches its schema in openapi.json."""
    assert _differences(SPEC_SCHEMA, _struct_schema()) == []


def test_fields_with_a_fixed_value_are_sent_even_when_left_at_their_default() -> None:
    """media_type and video.type are required by the spec: they go out though defaulted."""
    body = msgspec.convert(
        {
            "model_name": "pegasus1.5",
            "analysis_mode": "general",
            "defaults": {
                "prompt": {
                    "input_text": "x",
                    "media_sources": [{"name": "a", "url": "https://e/x"}],
                }
            },
            "requests": [{"video": {"asset_id": "a1"}}],
        },
        CreateBatchRequest,
    )
    sent = json.loads(encoder.encode(body))
    assert sent["defaults"]["prompt"]["media_sources"] == [
        {"name": "a", "media_type": "image", "url": "https://e/x"}
    ]
    assert sent["requests"] == [{"video": {"asset_id": "a1", "type": "asset_id"}}]
    assert SPEC_VALIDATOR.is_valid(sent)


def _convert(body: Any) -> CreateBatchRequest | None:
    try:
        return msgspec.convert(body, CreateBatchRequest)
    except msgspec.ValidationError:
        return None


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_every_documented_shape_builds_and_encodes_back_unchanged(body: dict[str, Any]) -> None:
    """The request shapes the spec defines (media sources, fields, time ranges...) round-trip."""
    body = {k: v for k, v in body.items() if k != "metadata"}  # structs refuse unknown keys
    request = _convert(body)
    assert request is not None
    assert json.loads(encoder.encode(request)) == body


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies())
def test_models_accept_what_the_api_accepts_and_never_send_what_the_spec_refuses(body: Any) -> None:
    """Accepted by the simulator: converts and round-trips. Converted: the spec accepts it."""
    try:
        parse_create(body)
        api_accepts = True
    except SimulatorError:
        api_accepts = False
    request = _convert(body)
    if request is None:
        assert not api_accepts or (isinstance(body, dict) and "metadata" in body)
        return
    sent = json.loads(encoder.encode(request))
    assert SPEC_VALIDATOR.is_valid(sent)
    if api_accepts:
        assert sent == body


def test_a_media_source_needs_exactly_one_reference() -> None:
    """None or two of url / asset_id / base64_string is refused when the struct is built."""
    with pytest.raises(ValueError, match="exactly one of url, asset_id, base64_string, not 0"):
        MediaSource(name="a")
    with pytest.raises(ValueError, match="not 2"):
        MediaSource(name="a", url="https://e/x", asset_id="a1")
    assert msgspec.json.decode(encoder.encode(MediaSource(name="a", base64_string="AA=="))) == {
        "name": "a",
        "media_type": "image",
        "base64_string": "AA==",
    }


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"max_tokens": 4096.0}, "Expected `int | null`, got `float` - at `$.defaults.max_tokens`"),
        ({"start_time": float("inf")}, "at `$.defaults.start_time`"),
        ({"temperature": float("nan")}, "at `$.defaults.temperature`"),
        (
            {"prompt": {"input_text": "x", "media_sources": [{"name": "a", "type": "image"}]}},
            "Object contains unknown field `type`",
        ),
    ],
)
@pytest.mark.anyio
async def test_values_the_spec_refuses_are_refused_before_sending(
    defaults: dict[str, Any], message: str
) -> None:
    """4096.0 for an integer, infinity (sent as null), NaN, the old media source shape."""
    async with Client(api_key=KEY, base_url="http://127.0.0.1:9/v1.3") as client:
        with pytest.raises(InvalidRequestError, match=re.escape(message)):
            await client.batches.create(
                [{"video": {"type": "asset_id", "asset_id": "a"}}],
                defaults={"prompt": {"input_text": "x"}, **defaults},
            )


@pytest.mark.anyio
async def test_the_client_sends_every_request_shape_and_the_simulator_accepts_it() -> None:
    """Structs for media sources, segment definitions and their fields reach a 201."""
    segments = ResponseFormat(
        type="segment_definitions",
        segment_time_format="hh:mm:ss.fff",
        segment_definitions=(
            SegmentDefinition(
                id="goals",
                description="A goal is scored",
                media_sources=(MediaSource(name="ball", asset_id="img-1"),),
                time_ranges=(TimeRange(start_time=0, end_time=30),),
                fields=(
                    SegmentField(name="team", type="string", description="d", enum=("a", "b")),
                    SegmentField(
                        name="players",
                        type="array",
                        description="d",
                        items=SegmentFieldItems(type="string"),
                    ),
                    SegmentField(name="kick", type="timestamp", description="d", format="seconds"),
                ),
            ),
        ),
    )
    prompt = Prompt(
        input_text="Is <@tiger> here?", media_sources=(MediaSource(name="tiger", url=IMAGE["url"]),)
    )
    async with (
        Simulator(api_key=KEY, clock=ManualClock()) as sim,
        Client(api_key=KEY, base_url=sim.base_url) as client,
    ):
        video = [{"video": {"type": "asset_id", "asset_id": "a1"}}]
        tbm = await client.batches.create(
            video,
            analysis_mode="time_based_metadata",
            defaults=BatchDefaults(response_format=segments),
        )
        plain = await client.batches.create(video, defaults=BatchDefaults(prompt=prompt))
        as_dicts = await client.batches.create(video, defaults=general()["defaults"])
    assert tbm.total_items == plain.total_items == as_dicts.total_items == 1


def test_the_new_request_structs_are_exported() -> None:
    """Segment definitions, their fields and time ranges are public names."""
    for name in ("SegmentDefinition", "SegmentField", "SegmentFieldItems", "TimeRange"):
        assert name in asyncbatch.__all__
