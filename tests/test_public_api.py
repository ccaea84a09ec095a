"""The public API is what the examples and the docs import, and everything users catch is in it.

A user's imports should come from a handful of modules, each with an ``__all__``. The example
bank, the typing examples (``tests/typing``), the README and the guide are what users copy, so
they may import only names that those modules export.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import eventsourcing_cqrs
import eventsourcing_cqrs.errors
import projections
import projections.errors

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = ("eventsourcing_cqrs", "projections", "escqrs")
PUBLIC_MODULES = (
    "eventsourcing_cqrs",
    "eventsourcing_cqrs.event_store",
    "eventsourcing_cqrs.reactions",
    "eventsourcing_cqrs.testing",
    "projections",
    "projections.read_model_store",
    "escqrs",
    # Apart because they need an extra (grpc) or pytest, which the modules above do not import.
    "eventsourcing_cqrs.testing.esdb_server",
    "eventsourcing_cqrs.testing.esdb_fixtures",
    "eventsourcing_cqrs.testing.contracts",
    "projections.testing.contracts",
)


def _python_sources() -> list[tuple[str, str]]:
    """(label, source) of every file and doc code block users copy imports from."""
    sources = [
        (str(path.relative_to(ROOT)), path.read_text())
        for folder in ("escqrs/examples", "tests/typing")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    for doc in ("README.md", "docs/guide.md"):
        path = ROOT / doc
        if path.exists():
            for number, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
                sources.append((f"{doc} python block {number + 1}", block))
    return sources


def _imports_from_our_packages(source: str) -> list[tuple[str, str, int]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in OUR_PACKAGES
            and not node.module.startswith("escqrs.examples")
        ):
            found.extend((node.module, alias.name, node.lineno) for alias in node.names)
    return found


@pytest.mark.parametrize(("label", "source"), _python_sources(), ids=lambda value: value[:60])
def test_examples_and_docs_import_only_public_names(label: str, source: str) -> None:
    wrong = []
    for module, name, line in _imports_from_our_packages(source):
        if module not in PUBLIC_MODULES:
            wrong.append(f"line {line}: {name} from {module}, which is not a public module")
        elif name not in importlib.import_module(module).__all__:
            wrong.append(f"line {line}: {name} is not in {module}.__all__")
    assert not wrong, f"{label} imports past the public API:\n" + "\n".join(wrong)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_a_public_module_exports_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize(
    ("errors_module", "package"),
    [(eventsourcing_cqrs.errors, eventsourcing_cqrs), (projections.errors, projections)],
    ids=["write side", "read side"],
)
def test_every_exception_of_a_side_is_importable_from_its_package(
    errors_module: object, package: object
) -> None:
    defined = {
        name
        for name, value in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(value, BaseException) and value.__module__ == getattr(errors_module, "__name__", "")
    }
    assert defined, "the errors module defines no exception"
    assert defined <= set(package.__all__), sorted(defined - set(package.__all__))  # type: ignore[attr-defined]
