"""Which RUNNING trials are alive, across launchers that share a study.

Ray's integration asks and tells trials outside Study.optimize, so Optuna's own heartbeat never
runs: a launcher writes the time into each of its RUNNING trials every HEARTBEAT_S (a user
attribute, so every storage has it), and a RUNNING trial silent for STALE_AFTER_S belongs to a
launcher that died: it is marked FAIL "interrupted" and runs again. Other launchers' live
trials are left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from ray.tune import Callback

from search.history import is_added

logger = logging.getLogger(__name__)
HEARTBEAT = "heartbeat"
HEARTBEAT_S = 10
STALE_AFTER_S = 60
INTERRUPTED = "interrupted"  # the fail_reason of a trial whose launcher died


def is_stale(trial: FrozenTrial, now: float) -> bool:
    """A RUNNING trial whose launcher stopped beating; one not yet beaten for is as old as
    its start (its launcher writes the first beat just after asking for it)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0
    return now - trial.user_attrs.get(HEARTBEAT, started) > STALE_AFTER_S


def fail_interrupted(storage: BaseStorage, study_name: str) -> list[int]:
    """Trials left RUNNING by a launcher that died are marked FAIL; returns their numbers.

    Optuna's storage API names trials by their storage id, which a FrozenTrial keeps only as
    the private ``_trial_id``: there is no public way to change a finished launcher's trial.
    """
    study_id = storage.get_study_id_from_name(study_name)
    now, numbers = time.time(), []
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, now):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it just finished, or another launcher marked it first
        numbers.append(trial.number)
    return numbers


def is_counted(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts toward the study's total: interrupted ones run again,
    one that ran out of memory is replaced by its retry (retried_as), and one added from an
    earlier study (search.warm_start) did not run here."""
    return trial.state.is_finished() and trial.user_attrs.get("fail_reason") != INTERRUPTED \
        and "retried_as" not in trial.user_attrs and not is_added(trial)


def finished_count(study: optuna.Study) -> int:
    return sum(map(is_counted, study.get_trials(deepcopy=False)))


class Heartbeat:
    """Writes the time into a launcher's running trials, at most every HEARTBEAT_S."""

    def __init__(self) -> None:
        self._last = 0.0

    def start(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(HEARTBEAT, time.time())

    def beat(self, running: Iterable[optuna.Trial]) -> list[optuna.Trial]:
        """Renew each trial's beat; returns those another launcher already took for dead."""
        now = time.time()
        if now - self._last < HEARTBEAT_S:
            return []
        self._last = now
        lost = []
        for trial in running:
            try:
                trial.set_user_attr(HEARTBEAT, now)
            except UpdateFinishedTrialError:
                logger.warning("trial %d was marked interrupted elsewhere", trial.number)
                lost.append(trial)
        return lost


class NoHeartbeat(Heartbeat):
    """For a study no other launcher shares and no later one resumes while it runs (tests)."""

    def start(self, trial: optuna.Trial) -> None:
        pass

    def beat(self, running: Iterable[optuna.Trial]) -> list[optuna.Trial]:
        return []


class BeatOnEachStep(Callback):
    """Ray callback: lets the searcher beat on every step of Ray's loop (a few times a
    second; the heartbeat itself writes at most every HEARTBEAT_S)."""

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.searcher.beat()
