"""Conventions the test suite holds itself to."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def undocumented_tests(path: Path) -> list[str]:
    """`file:line name` of every `test_*` function in `path` that has no docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{path.name}:{node.lineno} {node.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
        and ast.get_docstring(node) is None
    ]


def test_every_test_function_has_a_docstring() -> None:
    """Every `test_*` function in tests/test_*.py states the behaviour it proves in a
    docstring; the failure names each one that does not."""
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 10  # the glob found the suite, not an empty directory
    missing = [name for path in files for name in undocumented_tests(path)]
    assert missing == [], "test functions without a docstring:\n" + "\n".join(missing)
