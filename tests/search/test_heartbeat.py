"""Heartbeats: trials left running by a launcher that died, and live ones of another."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.heartbeat import (
    HEARTBEAT,
    INTERRUPTED,
    STALE_AFTER_S,
    Heartbeat,
    NoHeartbeat,
    fail_interrupted,
    finished_count,
)
from search.storage import open_storage


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


def test_a_heartbeat_writes_at_most_every_interval_and_reports_lost_trials(
        storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="s")
    mine, taken = study.ask(), study.ask()
    beat = Heartbeat()
    assert beat.beat([mine]) == []
    first = study.trials[mine.number].user_attrs[HEARTBEAT]
    assert beat.beat([mine]) == []  # within the interval: nothing written
    assert study.trials[mine.number].user_attrs[HEARTBEAT] == first
    study.tell(taken, state=TrialState.FAIL)  # another launcher took it for dead
    beat._last = 0.0
    assert beat.beat([mine, taken]) == [taken]
    assert NoHeartbeat().beat([mine]) == []
