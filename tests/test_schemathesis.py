"""Schemathesis against the simulator, driven by TwelveLabs' own OpenAPI spec.

The simulator is served on loopback (in a thread with its own event loop, as
Schemathesis calls it synchronously with ``requests``). Every operation is run
in positive and negative mode and as a stateful sequence along links, with
every check Schemathesis has. What the run does not take from the vendor spec
as it is, is listed once below, each entry with its reason:

* `SPEC_FIXES`: changes to a copy of the spec, where the spec itself is wrong or
  silent (the key as a security scheme, the undeclared 401, links, bounds its
  prose states but its schemas do not);
* `EXCLUSIONS`: one check on one operation, where the spec's schema cannot say
  what its prose does.

The short run (a few seconds, derandomized) is part of the normal suite; set
``ASYNCBATCH_SCHEMATHESIS_EXAMPLES`` (e.g. 500) for a long one.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
)

from asyncbatch.testing import Simulator

from ._spec import SPEC

KEY = "schemathesis-key"
EXAMPLES = int(os.environ.get("ASYNCBATCH_SCHEMATHESIS_EXAMPLES", "15"))
SpecFix = Callable[[dict[str, Any]], None]
BATCHES = "/analyze/batches"
BATCH = "/analyze/batches/{batch_id}"


def _key_as_security_scheme(spec: dict[str, Any]) -> None:
    """The key is declared both as a security scheme (never required) and as a plain header
    parameter of each operation; as a parameter, Schemathesis would fuzz it like data."""
    spec["security"] = [{"x-api-key": []}]
    for operation in _operations(spec):
        operation["parameters"] = [
            p for p in operation.get("parameters", ()) if p["name"] != "x-api-key"
        ]


def _declare_401(spec: dict[str, Any]) -> None:
    """Every operation needs the key, yet none declares the 401 a missing or wrong key gets."""
    unauthorized = {
        "description": "The API key is missing or invalid.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for operation in _operations(spec):
        operation["responses"].setdefault("401", unauthorized)


def _body_required(spec: dict[str, Any]) -> None:
    """The create body is optional in the spec, though its own schema requires three fields."""
    spec["paths"][BATCHES]["post"]["requestBody"]["required"] = True


def _links(spec: dict[str, Any]) -> None:
    """The spec has no links: a created or listed batch's ID feeds the batch operations."""
    created = {
        f"{op}": {"operationId": op, "parameters": {"batch_id": "$response.body#/batch_id"}}
        for op in ("retrieve", "cancel", "delete", "results")
    }
    listed = {
        f"{op}": {"operationId": op, "parameters": {"batch_id": "$response.body#/data/0/batch_id"}}
        for op in ("retrieve", "cancel", "results")
    }
    paths = spec["paths"]
    paths[BATCHES]["post"]["responses"]["201"]["links"] = created
    paths[BATCHES]["get"]["responses"]["200"]["links"] = listed
    paths[BATCH + "/cancel"]["post"]["responses"]["202"]["links"] = {
        "results": created["results"],
        "delete": created["delete"],
    }


def _prose_bounds(spec: dict[str, Any]) -> None:
    """Bounds the spec's prose states ("Max: 50", "Maximum 4 sources", "Minimum 1, maximum 20",
    "1-64 characters", "Min: 0 Max: 1", "Min: 2") but its schemas do not."""
    schemas = spec["components"]["schemas"]
    for parameter in spec["paths"][BATCHES]["get"]["parameters"]:
        if parameter["name"] == "page":
            parameter["schema"]["minimum"] = 1
        if parameter["name"] == "page_limit":
            parameter["schema"].update(minimum=1, maximum=50)
    schemas["AnalyzeTemperature"].update(minimum=0, maximum=1)
    for name in ("BatchDefaults", "BatchItemRequest"):
        properties = schemas[name]["properties"]
        for key in ("min_segment_duration", "max_segment_duration"):
            properties[key]["minimum"] = 2
        properties["start_time"]["minimum"] = 0
    item = schemas["BatchItemRequest"]["properties"]
    item["custom_id"]["pattern"] = "^[A-Za-z0-9_-]{1,64}$"
    batch = schemas["CreateAnalyzeBatchRequest"]["properties"]["requests"]
    batch.update(minItems=1, maxItems=1000)
    schemas["BatchPrompt"]["properties"]["media_sources"]["maxItems"] = 4
    schemas["SegmentDefinition"]["properties"]["media_sources"]["maxItems"] = 4
    definitions = schemas["AsyncResponseFormat"]["properties"]["segment_definitions"]
    definitions.update(minItems=1, maxItems=20)
    schemas["SegmentField"]["properties"]["enum"]["maxItems"] = 100


def _general_mode_prose(spec: dict[str, Any]) -> None:
    """For the stateful run only: the prose's rules for a general-mode create written into the
    schema, so that creates succeed and their batch IDs feed the linked operations (the mode's
    rules span fields, which the schema cannot say for both modes at once)."""
    schemas = spec["components"]["schemas"]
    schemas["CreateAnalyzeBatchRequestAnalysisMode"]["enum"] = ["general"]
    request = schemas["CreateAnalyzeBatchRequest"]
    request["required"] = [*request["required"], "defaults"]
    request["properties"]["requests"]["maxItems"] = 3
    defaults = schemas["BatchDefaults"]
    defaults["required"] = ["prompt"]
    for name in ("BatchDefaults", "BatchItemRequest"):
        properties = schemas[name]["properties"]
        for key in ("min_segment_duration", "max_segment_duration", "start_time", "end_time"):
            del properties[key]
        properties["max_tokens"].update(minimum=512, maximum=98_304)
        del properties["response_format"]
        properties["custom_id"] = {"type": "string", "format": "uuid"}  # unique in a batch
    del schemas["BatchDefaults"]["properties"]["custom_id"]
    schemas["BatchPrompt"]["properties"]["media_sources"]["maxItems"] = 0
    video = schemas["BatchVideoContext"]["properties"]["asset_id"]
    video["pattern"] = "^[0-9a-f]{24}$"


SPEC_FIXES: tuple[SpecFix, ...] = (
    _key_as_security_scheme,
    _declare_401,
    _body_required,
    _links,
    _prose_bounds,
)

# (method, path) -> {check: why the spec, not the simulator, fails it}
EXCLUSIONS: dict[tuple[str, str], dict[Callable[..., Any], str]] = {
    ("GET", BATCH + "/results"): {
        content_type_conformance: "the spec declares application/json; its own description and "
        "the API send JSON Lines (application/jsonl)",
    },
    ("POST", BATCHES): {
        positive_data_acceptance: "the schema cannot state the prose's cross-field rules (the "
        "mode decides whether prompt is required or refused, max_tokens ranges per mode, "
        "start_time < end_time, unique custom_id), so schema-valid bodies may rightly get 400",
    },
}


def _operations(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path, item in spec["paths"].items():
        if path.startswith(BATCHES):
            yield from item.values()


def _batch_spec(*extra: SpecFix) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["paths"] = {p: v for p, v in spec["paths"].items() if p.startswith(BATCHES)}
    for fix in (*SPEC_FIXES, *extra):
        fix(spec)
    return spec


class _ServedSimulator:
    """A simulator on its own event loop in a thread, for a synchronous HTTP client."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Room for every generated create: the 5-active limit is a 429 Schemathesis
        # would meet on most creates otherwise.
        async with Simulator(api_key=KEY, seed=7, max_active=100_000) as sim:
            self.base_url = sim.base_url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _ServedSimulator:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[_ServedSimulator]:
    with _ServedSimulator() as server:
        yield server


def _load(served: _ServedSimulator, spec: dict[str, Any]) -> Any:
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.config.update(base_url=served.base_url, headers={"x-api-key": KEY})
    loaded.config.generation.update(deterministic=True)
    return loaded


@pytest.fixture(scope="module")
def schema(served: _ServedSimulator) -> Any:
    return _load(served, _batch_spec())


def _excluded(case: Any) -> list[Callable[..., Any]]:
    return list(EXCLUSIONS.get((case.operation.method.upper(), case.operation.path), {}))


def _settings() -> settings:
    return settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )


OPERATIONS = [(method, path) for path, item in _batch_spec()["paths"].items() for method in item]
# The other operations take only a string path parameter: no request to them can
# break their schema, so negative mode has nothing to generate.
NEGATABLE = [("post", BATCHES), ("get", BATCHES)]
RUNS = [(*operation, GenerationMode.POSITIVE) for operation in OPERATIONS] + [
    (*operation, GenerationMode.NEGATIVE) for operation in NEGATABLE
]


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_every_operation_passes_every_check(
    schema: Any, served: _ServedSimulator, method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests, valid and invalid, get answers that pass all of Schemathesis' checks."""
    operation = schema[path][method.upper()]
    session = requests.Session()

    @_settings()
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(session=session, excluded_checks=_excluded(case))

    run()


def test_stateful_sequences_along_the_links_pass_every_check(served: _ServedSimulator) -> None:
    """Create, list, retrieve, cancel, results and delete chained by the batch IDs they return."""
    machine = _load(served, _batch_spec(_general_mode_prose)).as_state_machine()

    class Sequences(machine):  # type: ignore[misc,valid-type]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response, excluded_checks=_excluded(case), recorder=self.recorder
            )

    run_state_machine_as_test(
        Sequences,
        settings=settings(
            max_examples=max(5, EXAMPLES // 5),
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
