"""Study storage: URLs, masking, folders, and the one resolver of a study name or URL."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.errors import InputError
from search.storage import (
    StudyPaths,
    check_storage_url,
    mask,
    note_storage,
    open_storage,
    resolve_study,
)


def test_passwords_are_masked_and_unknown_schemes_refused() -> None:
    assert mask("postgresql://user:secret@db:5432/optuna") == \
        "postgresql://user:***@db:5432/optuna"
    assert mask("sqlite:///studies/x/optuna.db") == "sqlite:///studies/x/optuna.db"
    with pytest.raises(ValueError, match=r"unsupported storage URL 'redis://u:\*\*\*@h/0'"):
        check_storage_url("redis://u:pw@h/0")
    with pytest.raises(ValueError, match="journal: needs a file path"):
        check_storage_url("journal:")


def test_trial_folders_are_zero_padded_under_the_study(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FTSEARCH_STUDIES", str(tmp_path))
    paths = StudyPaths.for_study("lora")
    assert paths.db == tmp_path / "lora" / "optuna.db"
    assert paths.trial_dir(7) == tmp_path / "lora" / "trials" / "0007"


def test_a_study_is_found_by_name_in_sqlite_or_in_the_storage_its_folder_notes(
        studies_dir: Path, tmp_path: Path) -> None:
    for name, url in (("lite", None), ("journaled", f"journal:{tmp_path / 'j.log'}")):
        paths = StudyPaths.for_study(name)
        url = url or f"sqlite:///{paths.db}"
        paths.root.mkdir(parents=True)
        optuna.create_study(storage=open_storage(url), study_name=name).optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        note_storage(paths, url)
        resolved = resolve_study(name)
        assert (resolved.url, resolved.study.study_name, resolved.paths) == (url, name, paths)
        assert resolve_study(url).study.study_name == name  # by URL too
    # A noted URL whose password was masked cannot be opened by name: one clear line.
    paths = StudyPaths.for_study("remote")
    paths.root.mkdir()
    note_storage(paths, "postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in paths.storage_note.read_text()
    with pytest.raises(InputError, match="give that URL with its password"):
        resolve_study("remote")
    with pytest.raises(InputError, match="no study of that name"):
        resolve_study("nothing")
