"""Ray Tune's Optuna searcher, made to keep an honest study.

Ray's ``OptunaSearch`` records every trial that ends without an error as COMPLETE, with the
training iteration as the step. Here intermediate values are keyed by the optimizer step,
trials the scheduler stopped are PRUNED, failures carry their reason, and every trial carries
its resolved config and artefact folder as user attributes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from objectives.base import finite
from search.distributions import DefineByRun
from search.outcome import outcome
from search.space import SearchSpace
from search.storage import (
    HEARTBEAT,
    HEARTBEAT_S,
    INTERRUPTED,
    StudyPaths,
    fail_interrupted,
    is_counted,
)

logger = logging.getLogger(__name__)
RECOUNT_S = 2  # how often a launcher waiting on other launchers' trials looks again


class StudySearcher(OptunaSearch):
    def __init__(
        self,
        space: SearchSpace,
        study_name: str,
        storage: BaseStorage,
        paths: StudyPaths,
        sampler: optuna.samplers.BaseSampler,
        n_trials: int,
    ) -> None:
        study = space.head.study
        super().__init__(
            space=DefineByRun(space.head.search),
            metric=study.metric,
            mode="min" if study.direction == "minimize" else "max",
            sampler=sampler,
            study_name=study_name,
            storage=storage,
        )
        self.search_space, self.paths, self.n_trials = space, paths, n_trials
        self._last_step: dict[str, int] = {}
        self._last_beat = self._next_count = 0.0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        # The study's count, not this launcher's, decides: other launchers may share the study.
        # While trials running elsewhere could still fill it, wait (None): they may fail or
        # go stale, and then this launcher runs their replacements.
        if time.monotonic() < self._next_count:
            return None
        trials = self._ot_study.get_trials(deepcopy=False)
        counted = sum(map(is_counted, trials))
        if counted >= self.n_trials:
            return Searcher.FINISHED
        if counted + sum(t.state == TrialState.RUNNING for t in trials) >= self.n_trials:
            fail_interrupted(self._ot_study._storage, self._ot_study.study_name)
            self._next_count = time.monotonic() + RECOUNT_S
            return None
        params = super().suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        trial = self._ot_trials[trial_id]
        trial.set_user_attr(HEARTBEAT, time.time())
        # A retry (after running out of memory) keeps the params and changes how it runs.
        overrides = trial.user_attrs.get("overrides", {})
        config = self.search_space.trial_config({**params, **overrides})
        trial.set_user_attr("config", config.model_dump(mode="json"))
        trial.set_user_attr("trial_dir", str(self.paths.trial_dir(trial.number)))
        trial.set_user_attr("ray_trial_id", trial_id)
        return {"trial_number": trial.number, "params": params, "overrides": overrides}

    def beat(self) -> None:
        """Renew the heartbeat of this launcher's running trials (see search.storage)."""
        now = time.time()
        if now - self._last_beat < HEARTBEAT_S:
            return
        self._last_beat = now
        for trial_id, trial in self._ot_trials.items():
            if trial_id not in self._completed_trials:
                try:
                    trial.set_user_attr(HEARTBEAT, now)
                except UpdateFinishedTrialError:  # another launcher took it for dead
                    logger.warning("trial %d was marked interrupted elsewhere", trial.number)
                    self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        # The last report repeats the best value; it is the trial's result, not a new step.
        step = int(result.get("step", -1))
        if ("outcome" not in result and finite(value) and step > self._last_step.get(trial_id, -1)
                and trial_id not in self._completed_trials):
            self._ot_trials[trial_id].report(float(value), step)
            self._last_step[trial_id] = step

    def _retry_with_less_memory(self, trial: optuna.Trial) -> None:
        """With retry_on_oom, the same params run once more in less memory; the two trials
        name each other (retried_as / retry_of)."""
        space = self.search_space
        attrs = trial.user_attrs
        if not space.head.retry_on_oom or "retry_of" in attrs:
            return
        config = space.trial_config({**trial.params, **attrs.get("overrides", {})})
        overrides = space.objective.oom_retry(config)
        if overrides is None:
            return
        self._ot_study.enqueue_trial(trial.params, user_attrs={
            "retry_of": trial.number, "overrides": overrides}, skip_if_exists=False)
        waiting = self._ot_study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.WAITING,))
        trial.set_user_attr("retried_as", waiting[-1].number)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        if result and not error:
            # The result that made the scheduler stop the trial reaches only this method.
            self.on_trial_result(trial_id, result)
        ended = outcome(result, error, self.metric)
        if result and result.get("node_ip"):
            trial.set_user_attr("node_ip", result["node_ip"])  # Ray adds it to every result
        if ended.reason:
            key = "fail_reason" if ended.state == optuna.trial.TrialState.FAIL else "prune_reason"
            trial.set_user_attr(key, ended.reason)
        if ended.out_of_memory:
            self._retry_with_less_memory(trial)
        try:
            self._ot_study.tell(trial, ended.value, state=ended.state)
        except Exception as error:  # noqa: BLE001
            # Optuna stores the state in a `finally` after the sampler's after_trial, which
            # can raise outside Study.optimize: the grid sampler calls Study.stop when its grid
            # is done, and expects a grid id that enqueued trials lack. Only a state that was
            # not stored is an error.
            stored = self._ot_study._storage.get_trial(trial._trial_id)
            if stored.user_attrs.get("fail_reason") == INTERRUPTED:
                logger.warning("trial %d was marked interrupted elsewhere", trial.number)
            elif stored.state != ended.state:
                raise
            logger.debug("sampler post-processing of trial %d: %s", trial.number, error)
        self._completed_trials.add(trial_id)


class Heartbeat(Callback):
    """Beats for the searcher's trials on every step of Ray's loop (a few times a second)."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.searcher.beat()
