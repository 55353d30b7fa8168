"""Study storage: URLs, masking, and trials left running by a dead driver."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.storage import (
    HEARTBEAT,
    INTERRUPTED,
    STALE_AFTER_S,
    StudyPaths,
    check_storage_url,
    fail_interrupted,
    finished_count,
    mask,
    open_storage,
)


@pytest.fixture(params=["sqlite", "journal"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'optuna.db'}"
    return f"journal:{tmp_path / 'nested' / 'journal.log'}"


def test_running_trials_become_interrupted_failures_and_do_not_count(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    left_running = study.ask()
    left_running.set_user_attr(HEARTBEAT, time.time() - STALE_AFTER_S - 1)
    assert fail_interrupted(storage, "s") == [left_running.number]
    trial = study.trials[left_running.number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == INTERRUPTED
    # The two finished trials count; the interrupted one is made up for.
    assert finished_count(study) == 2


def test_only_trials_whose_launcher_stopped_beating_are_interrupted(storage_url: str) -> None:
    storage = open_storage(storage_url)
    study = optuna.create_study(storage=storage, study_name="s")
    live, dead = study.ask(), study.ask()
    study.ask()  # no heartbeat yet: its launcher writes one right after asking
    live.set_user_attr(HEARTBEAT, time.time())  # another launcher is running it
    dead.set_user_attr(HEARTBEAT, time.time() - STALE_AFTER_S - 1)
    assert fail_interrupted(storage, "s") == [dead.number]
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.FAIL,
                                               TrialState.RUNNING]
    assert finished_count(study) == 0


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
