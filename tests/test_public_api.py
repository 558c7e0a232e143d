"""The public API contract of design section 3: names, shapes, and a sorted, complete __all__."""

from __future__ import annotations

import inspect
import types
import typing

import msgspec
import pytest

import asyncbatch
import asyncbatch.redis
import asyncbatch.testing
import asyncbatch.webhooks

# Every name design section 3 (and the model list of section 2) puts on the package.
DESIGN_NAMES = [
    "AsyncBatchError",
    "Batch",
    "BatchStatus",
    "Client",
    "CreatedBatch",
    "Event",
    "EventKind",
    "ItemError",
    "ItemStatus",
    "RateLimitError",
    "ResultItem",
    "Watcher",
    "WebhookDelivery",
]

BATCHES_METHODS = ["retrieve", "list", "create", "cancel", "delete", "results", "wait",
                   "create_and_wait"]  # fmt: skip


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_design_names_exist(name: str) -> None:
    """Each name the design promises is importable from the package and listed in __all__."""
    assert inspect.isclass(getattr(asyncbatch, name))
    assert name in asyncbatch.__all__


def test_all_is_sorted_and_every_entry_exists() -> None:
    """__all__ is sorted, without duplicates, and names only what the package has."""
    assert list(asyncbatch.__all__) == sorted(set(asyncbatch.__all__))
    missing = [name for name in asyncbatch.__all__ if not hasattr(asyncbatch, name)]
    assert missing == []


def test_all_lists_every_public_class() -> None:
    """Every public class in the package namespace is exported in __all__."""
    public = {
        name
        for name, value in vars(asyncbatch).items()
        if not name.startswith("_") and inspect.isclass(value)
    }
    assert public - set(asyncbatch.__all__) == set()


def _classes_in(hint: object) -> set[type]:
    if inspect.isclass(hint) and not isinstance(hint, types.GenericAlias):
        return {hint}
    found: set[type] = set()
    for arg in typing.get_args(hint):
        found |= _classes_in(arg)
    origin = typing.get_origin(hint)
    if inspect.isclass(origin):
        found.add(origin)
    return found


def _hints(function: object) -> list[object]:
    # Names imported only for type checking resolve against the package namespace.
    return list(typing.get_type_hints(function, localns=vars(asyncbatch)).values())


def test_public_signatures_use_exported_classes() -> None:
    """Every asyncbatch class a public method takes or returns is exported."""
    owners = [asyncbatch.Client, asyncbatch.Batches, asyncbatch.Watcher, asyncbatch.ResultStream]
    used: set[type] = set()
    for owner in owners:
        for name, member in vars(owner).items():
            if not name.startswith("_") and inspect.isfunction(member):
                used |= {c for hint in _hints(member) for c in _classes_in(hint)}
    ours = {c for c in used if getattr(c, "__module__", "").startswith("asyncbatch")}
    names = {c.__name__ for c in ours}
    assert {"Batch", "CreatedBatch", "ResultStream", "RetryPolicy", "Watcher"} <= names
    assert names - set(asyncbatch.__all__) == set()


def test_client_signature() -> None:
    """Client(api_key=None, base_url=None) as the design writes it; the rest keyword-only."""
    params = inspect.signature(asyncbatch.Client).parameters
    assert list(params)[:2] == ["api_key", "base_url"]
    assert params["api_key"].default is None
    assert params["base_url"].default is None
    keyword_only = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert {"timeout", "retry", "session"} <= {p.name for p in keyword_only}


@pytest.mark.parametrize("method", BATCHES_METHODS)
def test_batches_methods(method: str) -> None:
    """client.batches has one method per endpoint, plus wait and create_and_wait."""
    assert callable(getattr(asyncbatch.Batches, method))


def test_async_shapes() -> None:
    """Endpoint calls are coroutines; list is an async generator; results returns a stream."""
    batches = asyncbatch.Batches
    for name in ("retrieve", "create", "cancel", "delete", "wait", "create_and_wait"):
        assert inspect.iscoroutinefunction(getattr(batches, name)), name
    assert inspect.isasyncgenfunction(batches.list)
    assert typing.get_type_hints(batches.results)["return"] is asyncbatch.ResultStream
    assert callable(asyncbatch.Client.watch)


def test_event_shape() -> None:
    """Event carries kind, batch_id, batch, previous, error; EventKind is a StrEnum of six kinds."""
    fields = set(inspect.signature(asyncbatch.Event).parameters)
    assert {"kind", "batch_id", "batch", "previous", "error"} <= fields
    assert issubclass(asyncbatch.EventKind, str)
    assert {k.value for k in asyncbatch.EventKind} == {
        "seen",
        "status",
        "progress",
        "done",
        "gone",
        "error",
    }


def test_statuses_match_the_reference() -> None:
    """BatchStatus and ItemStatus hold exactly the documented values."""
    assert {s.value for s in asyncbatch.BatchStatus} == {
        "pending",
        "processing",
        "canceling",
        "completed",
        "canceled",
        "expired",
    }
    assert {s.value for s in asyncbatch.ItemStatus} == {
        "queued",
        "processing",
        "ready",
        "failed",
        "canceled",
    }


STRUCTS = sorted(
    (
        value
        for value in vars(asyncbatch).values()
        if inspect.isclass(value) and issubclass(value, msgspec.Struct)
    ),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda c: c.__name__)
def test_every_exported_struct_compiles_for_msgspec(struct: type[msgspec.Struct]) -> None:
    """Users can decode into and convert to every exported struct (their annotations resolve)."""
    msgspec.json.Decoder(struct)
    msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
    assert msgspec.json.schema(struct)


def test_structs_were_found() -> None:
    """The struct walk above is not empty."""
    assert {"Batch", "CreateBatchRequest", "ResultItem"} <= {c.__name__ for c in STRUCTS}


PUBLIC_MODULES = [asyncbatch, asyncbatch.testing, asyncbatch.webhooks, asyncbatch.redis]


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_each_public_module_has_a_sorted_complete_all(module: types.ModuleType) -> None:
    """Each public module's __all__ is sorted (constants, classes, functions, as ruff keeps it),
    names what it has, and lists its public classes."""
    assert list(module.__all__) == sorted(set(module.__all__), key=_isort_key)
    assert [name for name in module.__all__ if not hasattr(module, name)] == []
    elsewhere = {n for m in PUBLIC_MODULES if m is not module for n in m.__all__}
    classes = {n for n, v in vars(module).items() if not n.startswith("_") and inspect.isclass(v)}
    ours = {n for n in classes if vars(module)[n].__module__.startswith("asyncbatch")}
    assert ours - set(module.__all__) - elsewhere == set()


def _public_classes() -> list[type]:
    return [
        value
        for module in PUBLIC_MODULES
        for name in module.__all__
        if inspect.isclass(value := getattr(module, name))
        and value.__module__.startswith("asyncbatch")
        and not issubclass(value, BaseException)
    ]


def test_public_signatures_of_every_public_module_use_exported_classes() -> None:
    """Every asyncbatch class that a public method of a public class of any public module (or
    the `Watcher` constructor) takes or returns is exported by one of them."""
    exported = {getattr(m, n) for m in PUBLIC_MODULES for n in m.__all__}
    namespace = {n: getattr(m, n) for m in PUBLIC_MODULES for n in m.__all__}
    used: set[type] = set()
    for owner in _public_classes():
        for name, member in vars(owner).items():
            constructor = owner is asyncbatch.Watcher and name == "__init__"
            public = not name.startswith("_") or constructor
            if public and inspect.isfunction(member):
                hints = typing.get_type_hints(member, localns=namespace).values()
                used |= {c for hint in hints for c in _classes_in(hint)}
    ours = {c for c in used if getattr(c, "__module__", "").startswith("asyncbatch")}
    assert {asyncbatch.WatchOptions, asyncbatch.PollPolicy, asyncbatch.BatchSource} <= ours
    assert {c.__qualname__ for c in ours - exported} == set()
