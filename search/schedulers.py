"""Ray Tune trial schedulers by name: the one owner of early stopping across trials.

Never stopped: the untuned baseline (the reference every result is compared with is trained
to its end), a trial at its last evaluation (its final report follows) and a final report.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.schedulers.async_hyperband import _Bracket

from objectives.base import LAST_EVALUATION, OUTCOME, STEP
from search.errors import InputError
from search.space import SearchSpace

TIME_ATTR = STEP  # trials report the optimizer step; rungs and grace periods count in it
BASELINE = "baseline"  # set in the config Ray holds for the untuned trial
ORDER = "order"  # in a reproducible search, a trial's place in the order trials were asked


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


class _Finite(_Bracket):
    """ASHA's bracket, its rung cutoff taken over the values that are numbers. Ray's takes
    ``np.nanpercentile``, which decides nothing when every value at a rung is NaN (a metric
    that diverged) but warns "All-NaN slice encountered" on stderr; here it decides nothing
    silently, as for a rung nobody reached."""

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        return super().cutoff({trial_id: value for trial_id, value in recorded.items()
                               if not math.isnan(value)})


class ProtectedASHA(_Protect, ASHAScheduler):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # ASHA keeps its brackets in a private list, made in its __init__ with these same
        # arguments (one bracket: brackets=1); pinned by tests/search/test_schedulers.py.
        self._brackets = [self._bracket(min_t=kwargs["grace_period"], max_t=kwargs["max_t"],
                                        reduction_factor=kwargs["reduction_factor"], s=0)]

    def _bracket(self, **kwargs: Any) -> _Bracket:
        return _Finite(**kwargs)


class ProtectedMedian(_Protect, MedianStoppingRule):
    def _undo_stop(self, trial: Any) -> None:
        # The median rule keeps the trials it stopped in a private set, and asserts on the
        # next result of one; no public API forgets a stop (tests/search/test_schedulers.py).
        self._stopped_trials.discard(trial)


class _Settled(_Finite):
    """ASHA's bracket, with the k-th trial's rung cutoff taken over the trials asked before
    the (k - window + 1)-th only: a reproducible search starts the k-th trial once all of
    those have ended (search.searcher), so the decision is the same whichever running trial
    reaches a rung first (study.reproducible)."""

    def __init__(self, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._window = window
        self._order: dict[str, int] = {}
        self._current = 0

    def on_result(self, trial: Any, cur_iter: int, cur_rew: float | None) -> str:
        self._current = self._order[trial.trial_id] = trial.config[ORDER]
        return super().on_result(trial, cur_iter, cur_rew)

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        return super().cutoff({trial_id: value for trial_id, value in recorded.items()
                               if self._order[trial_id] <= self._current - self._window})


class ReproducibleASHA(ProtectedASHA):
    def __init__(self, window: int, **kwargs: Any) -> None:
        self._window = window
        super().__init__(**kwargs)

    def _bracket(self, **kwargs: Any) -> _Bracket:
        return _Settled(self._window, **kwargs)


def decision_steps(space: SearchSpace) -> tuple[float, ...]:
    """The steps from which ASHA compares trials: the rungs of the bracket ``build_scheduler``
    makes; none for the other schedulers: the median rule compares at every evaluation, none
    never."""
    if space.head.scheduler.name != "asha":
        return ()
    return tuple(sorted(float(milestone) for milestone, _
                        in build_scheduler(space)._brackets[0]._rungs))


def build_scheduler(space: SearchSpace) -> TrialScheduler:
    section, study = space.head.scheduler, space.head.study
    mode = "min" if study.direction == "minimize" else "max"
    if section.name == "none":
        return FIFOScheduler()
    if section.name == "median" and study.reproducible:
        raise InputError(space.source, "scheduler.name", "the median rule compares a trial "
                         "with whatever the others have reported by then, so a reproducible "
                         "search cannot use it: use asha or none")
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
    asha = (partial(ReproducibleASHA, window=study.max_concurrent_trials) if study.reproducible
            else ProtectedASHA)
    return asha(time_attr=TIME_ATTR, metric=study.metric, mode=mode, max_t=max_t + 1,
                grace_period=section.grace_period, reduction_factor=section.reduction_factor)
