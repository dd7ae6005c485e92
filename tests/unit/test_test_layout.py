"""The tests' own layout: no module under tests/ imports a test module (`test_*.py`) or a
conftest. What tests share is in `tests/helpers/` (plain functions) or a conftest's fixtures
(which reach a test through pytest, never through an import)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(source: str, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module that `source`, a module of `package`, imports, and
    of every name a `from` import takes (it may be a module: `from tests.x import test_y`)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` above this one
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def named_test_module(module: str) -> str | None:
    """The test module or conftest that the dotted name `module` is, or is in."""
    parts = module.split(".")
    if parts[0] != "tests":
        return None
    for i, part in enumerate(parts):
        if part.startswith("test_") or part == "conftest":
            return ".".join(parts[: i + 1])
    return None


def test_no_module_under_tests_imports_a_test_module_or_a_conftest() -> None:
    modules = list(TESTS.rglob("*.py"))
    assert len([m for m in modules if m.name.startswith("test_")]) > 40  # it looks at the tests
    found = sorted(
        {
            f"{path.relative_to(TESTS.parent)}:{line} imports {test_module}"
            for path in modules
            for line, module in imported_modules(
                path.read_text(), ["tests", *path.relative_to(TESTS).parent.parts]
            )
            if (test_module := named_test_module(module))
        }
    )
    assert found == [], "share it through tests/helpers/ instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import tests.integration.test_api", True),
        ("from tests.integration.test_api import INGEST", True),
        ("from tests.integration import test_api", True),
        ("from .test_api import INGEST", True),
        ("from . import conftest", True),
        ("from ..reliability.test_worker_crash import expedite", True),
        ("from tests.integration.conftest import Stack", True),
        ("def f():\n    from tests.workflow.test_replay import x", True),
        ("from tests.helpers import INGEST", False),
        ("from tests.integration.servers import TemporalDevServer", False),
        ("from .servers import TemporalDevServer", False),
        ("from recovery.store import Store", False),
    ],
)
def test_the_check_sees_every_form_of_import(source: str, flagged: bool) -> None:
    """As if `source` were a module of tests/integration/."""
    names = [m for _, m in imported_modules(source, ["tests", "integration"])]
    assert any(named_test_module(m) for m in names) is flagged, names
