"""The simulator checks create bodies as the spec's schemas and prose say, and never answers 500.

The schema it checks against is compared with the one derived from TwelveLabs'
``openapi.json``; generated bodies near a valid one are judged by an
independent JSON Schema validator, and every body that validator refuses must
be a 400 here too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import hypothesis.strategies as st
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings

from asyncbatch.testing import ManualClock, Simulator, SimulatorError
from asyncbatch.testing._sim_schema import CREATE_REQUEST, PROSE_KEYWORDS
from asyncbatch.testing._sim_validate import decode_body, parse_create

from ._spec import resolved, without

KEY = "validation-key"
SPEC_SCHEMA = resolved("CreateAnalyzeBatchRequest")
# Draft 4 is what OpenAPI 3.0 builds on: there 4096.0 is not an integer.
SPEC_VALIDATOR = jsonschema_rs.Draft4Validator(SPEC_SCHEMA)

VIDEO = {"type": "asset_id", "asset_id": "asset-1"}
IMAGE = {"name": "tiger", "media_type": "image", "url": "https://example.com/t.png"}
DEFINITION = {"id": "scenes", "description": "Scene changes"}


def general(**defaults: Any) -> dict[str, Any]:
    """A valid general-mode body; ``defaults`` replace or add default options."""
    return {
        "model_name": "pegasus1.5",
        "analysis_mode": "general",
        "defaults": {"prompt": {"input_text": "Summarise."}, **defaults},
        "requests": [{"video": dict(VIDEO), "custom_id": "c-1"}],
    }


def segments(**defaults: Any) -> dict[str, Any]:
    """A valid time_based_metadata body."""
    response_format = {"type": "segment_definitions", "segment_definitions": [dict(DEFINITION)]}
    return {
        "model_name": "pegasus1.5",
        "analysis_mode": "time_based_metadata",
        "defaults": {"response_format": response_format, **defaults},
        "requests": [{"video": dict(VIDEO)}],
    }


def with_item(body: dict[str, Any], **item: Any) -> dict[str, Any]:
    """``body`` whose first request also sets ``item``."""
    body = copy.deepcopy(body)
    body["requests"][0].update(item)
    return body


def refused(body: object) -> SimulatorError:
    with pytest.raises(SimulatorError) as caught:
        parse_create(body)
    assert caught.value.status == 400
    assert caught.value.code in {"parameter_invalid", "parameter_not_provided"}
    return caught.value


def test_the_simulators_schema_is_the_specs_plus_its_prose_bounds() -> None:
    """Without the prose keywords, the checked schema equals openapi.json's, refs resolved."""
    ours = json.loads(json.dumps(without(CREATE_REQUEST, PROSE_KEYWORDS)))
    assert ours == SPEC_SCHEMA


# Each body breaks the spec's schemas (or a rule its prose states) in one place.
SCHEMA_INVALID: dict[str, dict[str, Any]] = {
    "media source without name": general(
        prompt={"input_text": "x", "media_sources": [{"media_type": "image", "url": IMAGE["url"]}]}
    ),
    "media source without media_type": general(
        prompt={"input_text": "x", "media_sources": [{"name": "a", "url": IMAGE["url"]}]}
    ),
    "media source of type video": general(
        prompt={"input_text": "x", "media_sources": [{**IMAGE, "media_type": "video"}]}
    ),
    "media_sources not an array": general(prompt={"input_text": "x", "media_sources": True}),
    "input_text not a string": general(prompt={"input_text": 3}),
    "segment definition without id": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [{"description": "d"}],
        }
    ),
    "segment definition without description": segments(
        response_format={"type": "segment_definitions", "segment_definitions": [{"id": "s"}]}
    ),
    "segment definition id not a string": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [{"id": 1, "description": "d"}],
        }
    ),
    "segment field without type": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [{**DEFINITION, "fields": [{"name": "n", "description": "d"}]}],
        }
    ),
    "segment field of unknown type": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {**DEFINITION, "fields": [{"name": "n", "description": "d", "type": "date"}]}
            ],
        }
    ),
    "segment_time_format outside its enum": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [DEFINITION],
            "segment_time_format": "minutes",
        }
    ),
    "response_format not an object": general(response_format="json_schema"),
    "response_format without type": general(response_format={"json_schema": {}}),
    "json_schema not an object": general(
        response_format={"type": "json_schema", "json_schema": []}
    ),
    "start_time not a number": general(start_time="0", end_time=10),
    "end_time not a number beside start_time": general(start_time=0, end_time="10"),
    "end_time a boolean": general(end_time=True),
    "temperature null": general(temperature=None),
    "max_tokens written as 4096.0": general(max_tokens=4096.0),
    "max_tokens a string": general(max_tokens="4096"),
    "defaults not an object": {**general(), "defaults": []},
    "requests not an array": {**general(), "requests": {"video": VIDEO}},
    "video asset_id not a string": with_item(general(), video={"type": "asset_id", "asset_id": 7}),
}

# Each body is schema-valid but breaks a rule the spec's prose states (a bound, "exactly
# one of", an https URL, a double's range, or a rule between fields).
PROSE_INVALID: dict[str, dict[str, Any]] = {
    "media source with url and asset_id": general(
        prompt={"input_text": "x", "media_sources": [{**IMAGE, "asset_id": "a1"}]}
    ),
    "media source with no reference": general(
        prompt={"input_text": "x", "media_sources": [{"name": "a", "media_type": "image"}]}
    ),
    "five media sources": general(prompt={"input_text": "x", "media_sources": [IMAGE] * 5}),
    "media source url not https": general(
        prompt={"input_text": "x", "media_sources": [{**IMAGE, "url": "ftp://x/y.png"}]}
    ),
    "five media sources in a definition": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [{**DEFINITION, "media_sources": [IMAGE] * 5}],
        }
    ),
    "21 segment definitions": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [{**DEFINITION, "id": f"s{i}"} for i in range(21)],
        }
    ),
    "end_time a huge integer": general(start_time=0, end_time=10**400),
    "timestamp field without format": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {**DEFINITION, "fields": [{"name": "at", "description": "d", "type": "timestamp"}]}
            ],
        }
    ),
    "format on a string field": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {
                    **DEFINITION,
                    "fields": [
                        {"name": "n", "description": "d", "type": "string", "format": "seconds"}
                    ],
                }
            ],
        }
    ),
    "array field without items": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {**DEFINITION, "fields": [{"name": "n", "description": "d", "type": "array"}]}
            ],
        }
    ),
    "timestamp field named start_time": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {
                    **DEFINITION,
                    "fields": [
                        {
                            "name": "start_time",
                            "description": "d",
                            "type": "timestamp",
                            "format": "seconds",
                        }
                    ],
                }
            ],
        }
    ),
    "duplicate segment ids": segments(
        response_format={"type": "segment_definitions", "segment_definitions": [DEFINITION] * 2}
    ),
    "time range shorter than 2 s": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {**DEFINITION, "time_ranges": [{"start_time": 0, "end_time": 1.5}]}
            ],
        }
    ),
    "overlapping time ranges": segments(
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {
                    **DEFINITION,
                    "time_ranges": [
                        {"start_time": 0, "end_time": 5},
                        {"start_time": 4, "end_time": 10},
                    ],
                }
            ],
        }
    ),
    "time ranges with a top-level window": segments(
        end_time=60,
        response_format={
            "type": "segment_definitions",
            "segment_definitions": [
                {**DEFINITION, "time_ranges": [{"start_time": 0, "end_time": 5}]}
            ],
        },
    ),
    "segment_time_format with json_schema": general(
        response_format={
            "type": "json_schema",
            "json_schema": {},
            "segment_time_format": "seconds",
        }
    ),
    "json_schema type without its schema": general(response_format={"type": "json_schema"}),
    "item end_time before the default start_time": with_item(general(start_time=30), end_time=10),
    "min_segment_duration in general mode": general(min_segment_duration=5),
    "max below min segment duration": segments(min_segment_duration=10, max_segment_duration=5),
}


@pytest.mark.parametrize("body", SCHEMA_INVALID.values(), ids=SCHEMA_INVALID.keys())
def test_schema_invalid_bodies_are_refused_with_400(body: dict[str, Any]) -> None:
    """Each body the spec's schemas refuse (the independent validator agrees) is a 400."""
    assert not SPEC_VALIDATOR.is_valid(body)
    refused(body)


@pytest.mark.parametrize("body", PROSE_INVALID.values(), ids=PROSE_INVALID.keys())
def test_prose_rules_refuse_schema_valid_bodies_with_400(body: dict[str, Any]) -> None:
    """Schema-valid bodies that break a rule of the spec's prose are a 400 too."""
    assert SPEC_VALIDATOR.is_valid(body)
    refused(body)


VALID: dict[str, dict[str, Any]] = {
    "image by url": general(prompt={"input_text": "<@tiger>?", "media_sources": [IMAGE]}),
    "image by asset and by base64": general(
        prompt={
            "input_text": "x",
            "media_sources": [
                {"name": "a", "media_type": "image", "asset_id": "img-1"},
                {"name": "b", "media_type": "image", "base64_string": "iVBORw0KGgo="},
            ],
        }
    ),
    "json schema output": general(
        response_format={"type": "json_schema", "json_schema": {"type": "object"}},
        temperature=0,
        max_tokens=512,
        start_time=0,
        end_time=30.5,
    ),
    "segments with every field kind": segments(
        response_format={
            "type": "segment_definitions",
            "segment_time_format": "hh:mm:ss",
            "segment_definitions": [
                {
                    **DEFINITION,
                    "media_sources": [IMAGE] * 4,
                    "time_ranges": [
                        {"start_time": 5, "end_time": 10},
                        {"start_time": 0, "end_time": 5},
                    ],
                    "fields": [
                        {"name": "who", "description": "d", "type": "string", "enum": ["a"]},
                        {
                            "name": "tags",
                            "description": "d",
                            "type": "array",
                            "items": {"type": "string"},
                        },
                        {
                            "name": "at",
                            "description": "d",
                            "type": "timestamp",
                            "format": "seconds",
                        },
                    ],
                }
            ],
        },
        max_tokens=2048,
    ),
    "segment durations": segments(min_segment_duration=2, max_segment_duration=2),
    "item window inside the defaults' start": with_item(general(start_time=5), end_time=6),
    "unknown fields are ignored": {**general(), "metadata": {"x": 1}},
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_bodies_the_spec_allows_are_accepted(body: dict[str, Any]) -> None:
    """Schema-valid bodies that meet the prose rules create a batch."""
    assert SPEC_VALIDATOR.is_valid(body)
    assert len(parse_create(body).items) == len(body["requests"])


def test_falsy_item_prompt_is_refused_not_replaced_by_the_default() -> None:
    """An item's ``{}`` or ``null`` prompt / response_format is an error, not 'use the default'."""
    assert "prompt.input_text is required" in refused(with_item(general(), prompt={})).message
    assert "null" in refused(with_item(general(), prompt=None)).message
    body = general(response_format={"type": "json_schema", "json_schema": {}})
    assert (
        "response_format.type is required" in refused(with_item(body, response_format={})).message
    )


def test_messages_name_the_field_path_with_its_dots() -> None:
    """'defaults.max_tokens', not 'defaultsmax_tokens'; an integer written 4096.0 says why."""
    assert refused(general(max_tokens=100)).message == (
        "defaults.max_tokens must be 512 to 98304 in general mode."
    )
    assert refused(general(temperature=2)).message == "defaults.temperature must be at most 1."
    assert "integer written without a fraction" in refused(general(max_tokens=4096.0)).message
    item = with_item(general(), temperature=-1)
    assert refused(item).message == "requests[0].temperature must be at least 0."


# Bodies near a valid one: replace one value somewhere with an arbitrary JSON value,
# or drop one key, so that most cases are invalid in exactly one place.
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
BASES = [*VALID.values(), *PROSE_INVALID.values()]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


@st.composite
def mutated_bodies(draw: Callable[..., Any]) -> Any:
    body = copy.deepcopy(draw(st.sampled_from(BASES)))
    path = draw(st.sampled_from(_paths(body)))
    if not path:
        return draw(JSON_VALUES)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return body


@settings(max_examples=400, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies())
def test_every_body_the_spec_refuses_is_a_400_and_nothing_else_escapes(body: Any) -> None:
    """parse_create only ever returns or raises a 400; a schema-invalid body always raises."""
    try:
        parse_create(body)
    except SimulatorError as exc:
        status = exc.status
    else:
        status = 201
    assert status == 400 or SPEC_VALIDATOR.is_valid(body)
    assert status in {400, 201}


HOSTILE_BODIES: dict[str, bytes] = {
    "nested 100,000 levels": b'{"requests": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "NaN": b'{"model_name": "pegasus1.5", "analysis_mode": "general", "requests": NaN}',
    "Infinity end_time": json.dumps(general())
    .encode()
    .replace(b'"defaults": {', b'"defaults": {"end_time": Infinity, '),
    "1e999 end_time": json.dumps(general())
    .encode()
    .replace(b'"defaults": {', b'"defaults": {"end_time": 1e999, '),
    "5,000-digit integer": b'{"model_name": ' + b"9" * 5000 + b"}",
    "invalid UTF-8": b'{"model_name": "\xff"}',
    "not JSON": b"{not json",
    "empty": b"",
    "a JSON string": b'"hello"',
}


@pytest.mark.parametrize("raw", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_bodies_are_a_400_not_a_crash(raw: bytes) -> None:
    """Undecodable, non-JSON and absurd bodies raise a 400 SimulatorError, nothing else."""
    with pytest.raises(SimulatorError) as caught:
        parse_create(decode_body(raw))
    assert caught.value.status == 400


@pytest.mark.anyio
async def test_over_http_malformed_create_bodies_get_400_with_the_error_shape() -> None:
    """The issue's crashers, and a charset Python does not know, answer 400 in the API's shape."""
    bodies = [
        (json.dumps(general(start_time=0, end_time="x")).encode(), "application/json"),
        (
            json.dumps(general(start_time=0)).replace("0}", f'0, "end_time": {10**400}}}').encode(),
            "application/json",
        ),
        (
            json.dumps(general(prompt={"input_text": "x", "media_sources": True})).encode(),
            "application/json",
        ),
        (HOSTILE_BODIES["nested 100,000 levels"], "application/json"),
        (json.dumps(general()).encode(), "application/json; charset=no-such-charset"),
    ]
    async with (
        Simulator(api_key=KEY, clock=ManualClock()) as sim,
        aiohttp.ClientSession(headers={"x-api-key": KEY}) as session,
    ):
        for raw, content_type in bodies:
            async with session.post(
                sim.base_url + "/analyze/batches",
                data=raw,
                headers={"content-type": content_type},
            ) as response:
                assert response.status in {400, 201}, raw[:80]
                body = await response.json()
                if response.status == 400:
                    assert set(body["error"]) == {"code", "message"}
        assert sim.batch_ids() == [sim.batch_ids()[0]]  # only the unknown-charset body was valid
