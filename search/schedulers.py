"""Ray Tune trial schedulers by name: the one owner of early stopping across trials.

Never stopped: the untuned baseline (the reference every result is compared with is trained
to its end), a trial at its last evaluation (its final report follows) and a final report.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from objectives.base import LAST_EVALUATION, OUTCOME, STEP
from search.errors import InputError
from search.space import SearchSpace

TIME_ATTR = STEP  # trials report the optimizer step; rungs and grace periods count in it
BASELINE = "baseline"  # set in the config Ray holds for the untuned trial


class _Protect:
    """Mixed into a scheduler: CONTINUE for the baseline and at a last evaluation, whatever
    the scheduler would decide (it still records the result, so others are compared with it)."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get(BASELINE) or result.get(LAST_EVALUATION) or OUTCOME in result:
            if decision == TrialScheduler.STOP:
                self._undo_stop(trial)
            return TrialScheduler.CONTINUE
        return decision

    def _undo_stop(self, trial: Any) -> None:
        """Forget a stop the scheduler decided and was overruled on."""


class ProtectedASHA(_Protect, ASHAScheduler):
    pass


class ProtectedMedian(_Protect, MedianStoppingRule):
    def _undo_stop(self, trial: Any) -> None:
        # The median rule keeps the trials it stopped in a private set, and asserts on the
        # next result of one; no public API forgets a stop (tests/search/test_schedulers.py).
        self._stopped_trials.discard(trial)


def build_scheduler(space: SearchSpace) -> TrialScheduler:
    section, study = space.head.scheduler, space.head.study
    mode = "min" if study.direction == "minimize" else "max"
    if section.name == "none":
        return FIFOScheduler()
    if section.name == "median":
        return ProtectedMedian(time_attr=TIME_ATTR, metric=study.metric, mode=mode,
                               grace_period=section.grace_period, min_samples_required=3)
    max_t = section.max_t or space.objective.max_steps(space.defaults)
    if not max_t or max_t <= 0:
        raise InputError(space.source, "scheduler.max_t", "ASHA needs the longest trial in "
                         "steps: set max_t, or the objective's step budget (training.max_steps)")
    if section.grace_period >= max_t:
        raise InputError(space.source, "scheduler.grace_period",
                         f"{section.grace_period} must be below max_t ({max_t})")
    # ASHA stops any trial whose step reaches max_t; one step more lets a full-length trial
    # end by itself (and its last evaluation is protected above).
    return ProtectedASHA(time_attr=TIME_ATTR, metric=study.metric, mode=mode, max_t=max_t + 1,
                         grace_period=section.grace_period,
                         reduction_factor=section.reduction_factor)
