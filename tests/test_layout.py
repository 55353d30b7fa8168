"""The one-way dependency of the contract: search/ knows objectives only through
objectives.base and the registry; no objective imports search/."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_search_imports_only_the_contract_and_the_registry_of_objectives() -> None:
    for path in sorted((REPO / "search").rglob("*.py")):
        used = {m for m in imported_modules(path) if m.split(".")[0] == "objectives"}
        assert used <= {"objectives", "objectives.base"}, (path.name, used)


def test_no_objective_imports_search() -> None:
    for path in sorted((REPO / "objectives").rglob("*.py")):
        used = {m for m in imported_modules(path) if m.split(".")[0] == "search"}
        assert not used, (path.relative_to(REPO), used)


def test_search_is_a_regular_package() -> None:
    # Not a namespace package that would merge with any other "search" on the path.
    assert (REPO / "search" / "__init__.py").is_file()
    assert (REPO / "objectives" / "__init__.py").is_file()
