"""Ray Tune trial schedulers by name: the one owner of early stopping across trials."""

from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from search.errors import SpaceError
from search.space import SearchSpace

# Trials report the optimizer step; rungs and grace periods are counted in it.
TIME_ATTR = "step"


def build_scheduler(space: SearchSpace) -> TrialScheduler:
    section, study = space.head.scheduler, space.head.study
    mode = "min" if study.direction == "minimize" else "max"
    if section.name == "none":
        return FIFOScheduler()
    if section.name == "median":
        return MedianStoppingRule(time_attr=TIME_ATTR, metric=study.metric, mode=mode,
                                  grace_period=section.grace_period, min_samples_required=3)
    max_t = section.max_t or getattr(getattr(space.defaults, "training", None), "max_steps", -1)
    if not max_t or max_t <= 0:
        raise SpaceError(space.source, "scheduler.max_t",
                         "ASHA needs the longest trial in steps: set max_t or training.max_steps")
    if section.grace_period >= max_t:
        raise SpaceError(space.source, "scheduler.grace_period",
                         f"{section.grace_period} must be below max_t ({max_t})")
    # ASHA stops any trial whose step reaches max_t, before it can record its final evaluation;
    # one step more lets a full-length trial end by itself.
    return ASHAScheduler(time_attr=TIME_ATTR, metric=study.metric, mode=mode, max_t=max_t + 1,
                         grace_period=section.grace_period,
                         reduction_factor=section.reduction_factor)
