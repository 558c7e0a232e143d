"""TwelveLabs' OpenAPI spec, as the tests read it: the file and its schemas with refs resolved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).parent / "data" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
# Documentation only: they do not change which values a schema admits.
ANNOTATIONS = frozenset({"description", "title", "default", "example", "examples"})


def resolved(name: str) -> dict[str, Any]:
    """Component schema ``name`` with every ``$ref`` inlined and the annotations dropped."""
    schema: dict[str, Any] = _resolve(SPEC["components"]["schemas"][name])
    return schema


def _resolve(node: Any) -> Any:
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return _resolve(SPEC["components"]["schemas"][name])
    return {
        key: (
            {name: _resolve(sub) for name, sub in value.items()}
            if key == "properties"
            else _resolve(value)
        )
        for key, value in node.items()
        if key not in ANNOTATIONS
    }


def without(schema: Any, keywords: frozenset[str]) -> Any:
    """``schema`` with ``keywords`` removed at every level (not from ``properties`` names)."""
    if isinstance(schema, list):
        return [without(item, keywords) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: (
            {name: without(sub, keywords) for name, sub in value.items()}
            if key == "properties"
            else without(value, keywords)
        )
        for key, value in schema.items()
        if key not in keywords
    }
