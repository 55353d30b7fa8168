"""Ray Tune's Optuna searcher, made to keep an honest study.

Ray's ``OptunaSearch`` records every trial that ends without an error as COMPLETE, with the
training iteration as the step. Here intermediate values are keyed by the optimizer step,
trials the scheduler stopped are PRUNED, failures carry their reason, and every trial carries
its resolved config and artefact folder as user attributes.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)


class StudySearcher(OptunaSearch):
    def __init__(
        self,
        space: SearchSpace,
        study_name: str,
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
            study_name=study_name,
            storage=storage,
        )
        self.search_space, self.paths = space, paths
        self._last_step: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        params = super().suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        trial = self._ot_trials[trial_id]
        # A retry (after running out of memory) keeps the params and changes how it runs.
        overrides = trial.user_attrs.get("overrides", {})
        config = self.search_space.trial_config({**params, **overrides})
        trial.set_user_attr("config", config.model_dump(mode="json"))
        trial.set_user_attr("trial_dir", str(self.paths.trial_dir(trial.number)))
        trial.set_user_attr("ray_trial_id", trial_id)
        return {"trial_number": trial.number, "params": params, "overrides": overrides}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        # The last report repeats the best value; it is the trial's result, not a new step.
        step = int(result.get("step", -1))
        if "outcome" not in result and finite(value) and step > self._last_step.get(trial_id, -1):
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
            if self._ot_study._storage.get_trial(trial._trial_id).state != ended.state:
                raise
            logger.debug("sampler post-processing of trial %d: %s", trial.number, error)
        self._completed_trials.add(trial_id)
