"""A study kept in a journal file or in PostgreSQL is searched, reported, compared and
exported like one in SQLite: by its storage URL, and by its name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import ray

import launcher
from tests.conftest import REPO, TINY_SPACE


def space_file(folder: Path, storage: str) -> Path:
    """tiny.yaml with its storage elsewhere: two short trials that both train."""
    text = TINY_SPACE.read_text().replace("../../../data", str(REPO / "data"))
    text = text.replace("n_trials: 5", f"n_trials: 2\n  storage: {storage}")
    text = text.replace("max_steps: 30", "max_steps: 20").replace("name: grid", "name: random")
    lines = [line for line in text.splitlines() if "lora.target_modules" not in line
             and "training.learning_rate" not in line]
    lines += ["  lora.r: {type: categorical, choices: [4, 8]}"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(params=["journal", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path / 'elsewhere' / 'journal.log'}"
    database: Callable[[str], str] = request.getfixturevalue("postgres")
    return database(f"ftstore{abs(hash(str(tmp_path))) % 10**6}")


def test_a_study_in_any_storage_is_reported_compared_and_exported(
        storage_url: str, tmp_path: Path, studies_dir: Path, local_ray, capsys) -> None:
    space = space_file(tmp_path, storage_url)
    try:
        assert launcher.main(["--space", str(space), "--study", "kept"]) == 0
    finally:
        ray.shutdown()
    assert not (studies_dir / "kept" / "optuna.db").exists()  # the study is elsewhere
    comparison = json.loads((studies_dir / "kept" / "comparison.json").read_text())
    assert comparison["n"] == 120 and comparison["metric"] == "test_accuracy"
    capsys.readouterr()
    for target in (storage_url, "kept"):  # by URL, and by name (its folder notes the URL)
        report = tmp_path / f"report-{target == 'kept'}.html"
        assert launcher.main(["report", target, "--out", str(report)]) == 0
        assert "comparison" in report.read_text()
        assert launcher.main(["compare", target]) == 0
        assert "test accuracy" in capsys.readouterr().out
        out = tmp_path / f"export-{target == 'kept'}"
        assert launcher.main(["export", target, "--out", str(out)]) == 0
        assert capsys.readouterr().err == ""  # no progress bar, no library notice
        assert json.loads((out / "export.json").read_text())["passed"] is True
        assert any(out.glob("*.gguf"))
