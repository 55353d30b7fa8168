"""Ray Tune's Optuna searcher, made to keep an honest study.

Ray's ``OptunaSearch`` records every trial that ends without an error as COMPLETE, with the
training iteration as the step. Here intermediate values are keyed by the optimizer step,
trials the scheduler stopped are PRUNED, failures carry their reason, the final metrics
(test-split figures) are user attributes, and every trial carries its resolved config and
artefact folder as user attributes.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from objectives.base import ATTRS, OUTCOME, STEP, TEST_FIGURE, finite
from search.distributions import DefineByRun, grid_points
from search.heartbeat import INTERRUPTED, Heartbeat, NoHeartbeat, fail_interrupted, is_counted
from search.outcome import outcome
from search.samplers import InOrder
from search.schedulers import BASELINE, ORDER
from search.space import SearchSpace
from search.storage import StudyPaths

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
        heartbeat: Heartbeat | None = None,
        time_budget_s: float | None = None,
    ) -> None:
        study = space.head.study
        # Ray checks that every result holds the searcher's metric: it knows only the first
        # objective, which each evaluation reports; the study (made before, with all its
        # directions) is told every objective's value at a trial's end.
        super().__init__(
            space=DefineByRun(space.head.search),
            metric=study.metric,
            mode="min" if study.direction == "minimize" else "max",
            sampler=sampler,
            study_name=study_name,
            storage=storage,
        )
        self.search_space, self.paths, self.n_trials = space, paths, n_trials
        # Trials report the first objective at each evaluation (the learning curve, which
        # the scheduler acts on); the others come with the final report.
        self.primary, self.others = study.metric, study.metrics[1:]
        self.storage = storage
        self.heartbeat = heartbeat or NoHeartbeat()
        self._last_step: dict[str, int] = {}
        self._next_count = 0.0
        # After the budget, counted from the first trial's start, no trial starts; running
        # ones finish (Ray's own time_budget_s would kill them).
        self._budget, self._deadline = time_budget_s, None
        self._grid = (grid_points(space.head.search) if space.head.sampler.name == "grid"
                      else None)
        # A reproducible search asks its trials in a fixed order (see _may_ask): the numbers
        # of its trials in the order asked, and those that had finished before the first.
        self._in_order = sampler if isinstance(sampler, InOrder) else None
        self._asked: list[int] = []
        self._before: frozenset[int] = frozenset()

    # --- Ray's OptunaSearch keeps its study, its live trials and the ids it has finished
    # as private attributes, with no public API; they are read here only (pinned by
    # tests/search/test_searcher.py).
    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def live_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial behind a Ray trial id, while it is not finished here."""
        if trial_id in self._completed_trials:
            return None
        return self._ot_trials.get(trial_id)

    def running(self) -> list[optuna.Trial]:
        return [t for i, t in self._ot_trials.items() if i not in self._completed_trials]

    def mark_finished(self, trial_id: str) -> None:
        self._completed_trials.add(trial_id)

    def _id_of(self, trial: optuna.Trial) -> str:
        return next(i for i, t in self._ot_trials.items() if t is trial)
    # ---

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        # The study's count, not this launcher's, decides: other launchers may share the study.
        # While trials running elsewhere could still fill it, wait (None): they may fail or
        # go stale, and then this launcher runs their replacements.
        if time.monotonic() < self._next_count:
            return None
        if self._budget and self._deadline is None:
            self._deadline = time.monotonic() + self._budget
        if self._deadline is not None and time.monotonic() > self._deadline:
            return Searcher.FINISHED
        trials = self.study.get_trials(deepcopy=False)
        counted = sum(map(is_counted, trials))
        if counted >= self.n_trials:
            return Searcher.FINISHED
        if counted + sum(t.state == TrialState.RUNNING for t in trials) >= self.n_trials:
            fail_interrupted(self.storage, self.study.study_name)
            self._next_count = time.monotonic() + RECOUNT_S
            return None
        if self._grid is not None and not self._enqueue_grid_point(trials):
            return Searcher.FINISHED
        if not self._may_ask():
            return None
        with warnings.catch_warnings():
            # The untuned baseline runs with its fixed values, which a float or int range need
            # not hold (the search looks elsewhere on purpose): accepted, not warned about.
            warnings.filterwarnings("ignore", message=r"Fixed parameter .* is out of range",
                                    category=UserWarning)
            params = super().suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        trial = self.live_trial(trial_id)
        order = {}
        if self._in_order:
            order[ORDER] = len(self._asked)
            self._asked.append(trial.number)
        self.heartbeat.start(trial)
        # A retry (after running out of memory) keeps the params and changes how it runs.
        overrides = trial.user_attrs.get("overrides", {})
        config = self.search_space.trial_config({**params, **overrides})
        trial.set_user_attr("config", config.model_dump(mode="json"))
        trial.set_user_attr("trial_dir", str(self.paths.trial_dir(trial.number)))
        trial.set_user_attr("ray_trial_id", trial_id)
        return {"trial_number": trial.number, "params": params, "overrides": overrides,
                BASELINE: bool(trial.user_attrs.get(BASELINE)),
                **order}

    def _may_ask(self) -> bool:
        """Whether the next trial may be asked for now. Always, unless the search is
        reproducible: then the k-th trial asked waits until every trial asked before the
        (k - max_concurrent_trials + 1)-th has ended, and the sampler sees only those and the
        trials finished before the search began. Each run thus asks the sampler the same
        questions in the same order, whichever trial ends first; the cost is a core idle when
        a later trial ends before an earlier one."""
        if self._in_order is None:
            return True
        if not self._asked:
            self._before = frozenset(t.number for t in self.study.get_trials(deepcopy=False)
                                     if t.state.is_finished())
        window = self.search_space.head.study.max_concurrent_trials
        settled = frozenset(self._asked[:max(0, len(self._asked) - window + 1)])
        if any(t.number in settled for t in self.running()):
            return False
        self._in_order.visible = self._before | settled
        return True

    def _enqueue_grid_point(self, trials: list[FrozenTrial]) -> bool:
        """Make sure a grid point waits to be tried: the next one that no trial of the study
        (``trials``) has tried, is trying or waits to try (the baseline's counts; an
        interrupted one's does not, so it runs again); False when every point is covered."""
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        covered = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials
                   if is_counted(t) or t.state == TrialState.RUNNING]
        point = next((p for p in self._grid if not any(_same(p, c) for c in covered)), None)
        if point is None:
            return False
        self.study.enqueue_trial(point)
        return True

    def interrupt_running(self) -> list[int]:
        """End this launcher's trials that are still running as FAIL "interrupted"."""
        numbers = []
        for trial in self.running():
            trial.set_user_attr("fail_reason", INTERRUPTED)
            self.study.tell(trial, state=TrialState.FAIL)
            self.mark_finished(self._id_of(trial))
            numbers.append(trial.number)
        return numbers

    def beat(self) -> None:
        """Renew the heartbeat of this launcher's running trials (see search.heartbeat)."""
        for trial in self.heartbeat.beat(self.running()):
            self.mark_finished(self._id_of(trial))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.primary)
        trial = self.live_trial(trial_id)
        # The last report repeats the best value; it is the trial's result, not a new step.
        step = int(result.get(STEP, -1))
        if (trial is not None and OUTCOME not in result and finite(value)
                and step > self._last_step.get(trial_id, -1)):
            # Straight to the storage: Optuna's Trial.report refuses multi-objective studies,
            # whose learning curves are kept all the same (Trial has no public id).
            self.storage.set_trial_intermediate_value(trial._trial_id, step, float(value))
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
        self.study.enqueue_trial(trial.params, user_attrs={
            "retry_of": trial.number, "overrides": overrides}, skip_if_exists=False)
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        trial.set_user_attr("retried_as", waiting[-1].number)

    def _final_metrics(self, result: dict[str, Any]) -> dict[str, float]:
        """The declared metrics and test-split figures (test_*, old_test_*) of a trial's last
        report."""
        space = self.search_space
        declared = {m.name for m in space.objective.metrics_for(space.defaults)}
        return {key: float(value) for key, value in result.items()
                if (key in declared or TEST_FIGURE.search(key))
                and key not in (self.primary, *self.others) and finite(value)}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        trial = self.live_trial(trial_id)
        if trial is None:
            return
        if result and not error:
            # The result that made the scheduler stop the trial reaches only this method.
            self.on_trial_result(trial_id, result)
        ended = outcome(result, error, self.primary, self.others)
        if result and result.get("node_ip"):
            trial.set_user_attr("node_ip", result["node_ip"])  # Ray adds it to every result
        if ended.state == TrialState.COMPLETE:
            for key, value in self._final_metrics(result).items():
                trial.set_user_attr(key, value)
            for key, value in json.loads(result.get(ATTRS) or "{}").items():
                trial.set_user_attr(key, value)
        if ended.reason:
            key = "fail_reason" if ended.state == TrialState.FAIL else "prune_reason"
            trial.set_user_attr(key, ended.reason)
        if ended.out_of_memory:
            self._retry_with_less_memory(trial)
        try:
            self.study.tell(trial, ended.values or None, state=ended.state)
        except Exception as error:  # noqa: BLE001
            # Optuna stores the state in a `finally` after the sampler's after_trial, which
            # can raise outside Study.optimize: the grid sampler calls Study.stop when its grid
            # is done, and expects a grid id that enqueued trials lack. Only a state that was
            # not stored is an error.
            stored = self.study.get_trials(deepcopy=False)[trial.number]
            if stored.user_attrs.get("fail_reason") == INTERRUPTED:
                logger.warning("trial %d was marked interrupted elsewhere", trial.number)
            elif stored.state != ended.state:
                raise
            logger.debug("sampler post-processing of trial %d: %s", trial.number, error)
        self.mark_finished(trial_id)


def _same(point: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a trial's params are this grid point (a parameter its conditions left out
    matches anything)."""
    return all(params.get(key, value) == value for key, value in point.items())
