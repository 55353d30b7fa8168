"""The objective's recommended setting, run right after the untuned default
(``study.recommended``).

An objective names known-good values of its parameters (``Objective.recommended``: for the
LoRA objectives, rank 16, alpha twice the rank and the learning rate in the middle of its
searched range). Where the space searches them, one trial takes each at the nearest value the
space holds, every other parameter untuned, and is queued after the untuned default and any
warm start's configurations: a search that begins from experience rather than from chance,
before the sampler has anything to model.
"""

from __future__ import annotations

from typing import Any

import optuna

from objectives.base import CENTRE
from search.distributions import centre, nearest
from search.history import RECOMMENDED
from search.space import SearchSpace, is_active


def recommended_params(space: SearchSpace) -> dict[str, Any] | None:
    """The untuned configuration with each searched parameter the objective recommends at
    the space's nearest value; None if that is the untuned configuration itself."""
    baseline = space.baseline_params()
    wanted = space.objective.recommended
    params: dict[str, Any] = {}
    for key, param in space.head.search.items():
        if not is_active(param, params):
            continue
        value = None
        if key in wanted:
            value = centre(param) if wanted[key] == CENTRE else nearest(param, wanted[key])
        if value is None:
            value = baseline.get(key)
        if value is not None:
            params[key] = value
    return None if params == baseline else params


def queue_recommended(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Queue the recommended setting in a new study, unless the grid sampler runs (it tries
    every point anyway) or a queued trial has the same parameters; the lines to print."""
    if not space.head.study.recommended or space.head.sampler.name == "grid":
        return []
    params = recommended_params(space)
    if params is None:
        return []
    study.enqueue_trial(params, user_attrs={RECOMMENDED: True}, skip_if_exists=True)
    baseline = space.baseline_params()
    changed = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in params.items() if baseline.get(key) != value)
    return [f"queued after the untuned default: the recommended setting ({changed}; "
            "study.recommended)"]
