"""The one-way dependency of the contract: search/ knows objectives only through
objectives.base and the registry; no objective imports search/."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_loading_the_default_space_and_a_workers_modules_leave_out_unused_libraries() -> None:
    """rouge-score (which imports nltk) and sacrebleu score free text only: a search of labels
    must not pay their seconds and megabytes in its own process or in each worker."""
    script = ("import sys; from search.space import load_space; load_space('lora.yaml'); "
              "import search.trainable; from objectives.causal_lm_lora import recipe; "
              "print(sorted(m for m in ('nltk', 'rouge_score', 'sacrebleu') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
