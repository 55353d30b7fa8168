"""Ray Tune's Optuna searcher, made to keep an honest study.

Ray's ``OptunaSearch`` records every trial that ends without an error as COMPLETE, with the
training iteration as the step. Here intermediate values are keyed by the optimizer step,
trials the scheduler stopped are PRUNED, failures carry their reason, and every trial carries
its resolved config and artefact folder as user attributes.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from objectives.base import finite
from search.distributions import DefineByRun
from search.outcome import outcome
from search.space import SearchSpace
from search.storage import StudyPaths


class StudySearcher(OptunaSearch):
    def __init__(
        self,
        space: SearchSpace,
        storage: BaseStorage,
        paths: StudyPaths,
        sampler: optuna.samplers.BaseSampler,
    ) -> None:
        study = space.head.study
        super().__init__(
            space=DefineByRun(space.head.search),
            metric=study.metric,
            mode="min" if study.direction == "minimize" else "max",
            sampler=sampler,
            study_name=space.study_name,
            storage=storage,
        )
        self.search_space, self.paths = space, paths
        self._last_step: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = super().suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        trial = self._ot_trials[trial_id]
        config = self.search_space.trial_config(params)
        trial.set_user_attr("config", config.model_dump(mode="json"))
        trial.set_user_attr("trial_dir", str(self.paths.trial_dir(trial.number)))
        trial.set_user_attr("ray_trial_id", trial_id)
        return {"trial_number": trial.number, "params": params}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        # The last report repeats the best value; it is the trial's result, not a new step.
        step = int(result.get("step", -1))
        if "outcome" not in result and finite(value) and step > self._last_step.get(trial_id, -1):
            self._ot_trials[trial_id].report(float(value), step)
            self._last_step[trial_id] = step

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        trial = self._ot_trials[trial_id]
        if result and not error:
            # The result that made the scheduler stop the trial reaches only this method.
            self.on_trial_result(trial_id, result)
        ended = outcome(result, error, self.metric, self.paths.trial_dir(trial.number))
        if ended.reason:
            key = "fail_reason" if ended.state == optuna.trial.TrialState.FAIL else "prune_reason"
            trial.set_user_attr(key, ended.reason)
        try:
            self._ot_study.tell(trial, ended.value, state=ended.state)
        except RuntimeError as error:
            # The grid sampler calls Study.stop once every point has run, which only works
            # inside Study.optimize; the trial's state is stored before that.
            if "Study.stop" not in str(error):
                raise
        self._completed_trials.add(trial_id)
