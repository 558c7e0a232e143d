"""The package's imports point one way: down the layers below, and never in a circle.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a type-only or
deferred import is still a dependency, and hiding one is how the last circle
(`_client` -> `_wait` -> `_watcher` -> `_client`) went unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import asyncbatch

ROOT = Path(asyncbatch.__file__).parent

# Lower layers first; a module may import from its own layer or any lower one. The client sits
# above the watcher because `Client.watch` and `batches.wait` build one; the watcher reads
# through the `BatchSource` protocol and never imports the client.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("_version", "_errors", "_redact", "_models", "_retry", "_budget")),
    # Telemetry sits beside the leaves: the transport and the watcher report to it.
    (
        "telemetry",
        ("_telemetry", "_telemetry_logging", "_telemetry_otel", "_telemetry_prometheus"),
    ),
    ("transport", ("_transport", "_results")),
    ("rules", ("_events", "_tracker")),
    ("shared state", ("_coordination", "_stores")),
    ("watcher", ("_watcher", "_wait")),
    # Jobs drive the client's calls and a watcher through protocols (`JobClient`), so that
    # `Client.jobs` can build one.
    ("jobs", ("_jobs",)),
    ("client", ("_client",)),
    # `_stores.url` opens any store from a URL, the Redis one included.
    ("features", ("_webhooks", "webhooks", "redis", "testing", "_stores.url")),
    # The Airflow facade drives the client and watcher from triggers and operators.
    ("integrations", ("airflow",)),
    ("cli", ("_cli", "__main__")),
    ("package", ("",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["asyncbatch", *parts])


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    """The index in `LAYERS` of a package module, by the longest member that names it or its
    package (members are paths below ``asyncbatch``; ``""`` is the package itself)."""
    relative = module.removeprefix("asyncbatch").removeprefix(".")
    matches = [
        (len(member), index)
        for index, (_, members) in enumerate(LAYERS)
        for member in members
        if relative == member or relative.startswith(f"{member}.")
    ]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def imports_of(module: str) -> set[str]:
    """The package modules that ``module`` imports, resolved to module names."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_walk_sees_the_known_arrows() -> None:
    """The walker resolves relative imports at every depth (one that saw nothing would pass)."""
    assert "asyncbatch._watcher" in GRAPH["asyncbatch._client"]
    assert "asyncbatch._models" in GRAPH["asyncbatch._cli.main"]
    assert "asyncbatch.webhooks" in GRAPH["asyncbatch.testing._sim_webhooks"]
    assert "asyncbatch._stores.memory" in GRAPH["asyncbatch._stores.sqlite"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up_a_layer(module: str) -> None:
    """Each module imports only from its own layer or lower ones."""
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
        for target in sorted(GRAPH[module])
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph[node]):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)):
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_a_circle() -> None:
    """The circle finder is not vacuous: it reports a three-module circle and passes a chain."""
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(circle) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_circle() -> None:
    """No chain of imports leads from a module back to itself."""
    assert find_cycle(GRAPH) is None
