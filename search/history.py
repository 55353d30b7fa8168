"""Which trials of a study ran in it: trials added from earlier studies (search.warm_start)
are in its history, for the sampler, and not its own."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

WARM_START = "warm_start"  # on a trial added from an earlier study: "STUDY:TRIAL"
QUEUED_FROM = "warm_start_from"  # on a queued configuration: the earlier trial it is
RECOMMENDED = "recommended"  # on the queued trial of the objective's recommended setting


def is_added(trial: FrozenTrial) -> bool:
    return WARM_START in trial.user_attrs


def own(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that ran in this study."""
    return [t for t in trials if not is_added(t)]


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """A study's own COMPLETE trials, best first on its first objective."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    complete = [t for t in own(study.get_trials(deepcopy=False))
                if t.state == TrialState.COMPLETE]
    return sorted(complete, key=lambda t: (sign * t.values[0], t.number))
