"""A new search that starts from what earlier studies learnt (``study.warm_start``).

When the study is made, each earlier study's finished trials (COMPLETE with their values,
PRUNED with their learning curves) are added to its history with Optuna's ``add_trials``, so
the sampler models them from the first trial on; and the earlier study's best
configurations (``study.warm_start_top_k``) are queued after the untuned default, to be
trained on this search's data. A trial's parameter that this space does not search, or whose
value its range does not hold, is left out of the added trial (and named once).

Added trials carry ``warm_start`` (``STUDY:TRIAL``, where they come from): they did not run in
this study, so they never count toward ``n_trials``, are never its best trial and are left out
of its counts.
"""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import TrialState

from search.distributions import distribution, holds
from search.errors import InputError
from search.history import QUEUED_FROM, WARM_START, own, ranked
from search.space import SearchSpace
from search.storage import resolve_study


def earlier_studies(space: SearchSpace) -> list[tuple[str, optuna.Study]]:
    """The studies ``study.warm_start`` names, checked before anything is made: each exists
    and optimised the same metrics in the same directions (else InputError)."""
    section = space.head.study
    studies = []
    for name in section.warm_start:
        try:
            earlier = resolve_study(name).study
        except InputError as error:
            raise InputError(space.source, "study.warm_start", f"{name!r}: {error}") from None
        metrics = list(earlier.metric_names or [earlier.user_attrs.get("metric")])
        if metrics != section.metrics or \
                [d.name.lower() for d in earlier.directions] != section.directions:
            raise InputError(space.source, "study.warm_start", f"study '{name}' optimised "
                             f"{', '.join(map(str, metrics))}; this search optimises "
                             f"{', '.join(section.metrics)}: its values would mislead the "
                             "sampler")
        studies.append((name, earlier))
    return studies


def seed_study(study: optuna.Study, space: SearchSpace,
               earlier: list[tuple[str, optuna.Study]]) -> list[str]:
    """Add each earlier study's trials to ``study`` and queue its best configurations; the
    lines to print."""
    section = space.head.study
    search = space.head.search
    baseline = space.baseline_params()

    def kept(params: dict) -> dict:
        """The parameters this space searches, at values its ranges hold."""
        return {k: v for k, v in params.items() if k in search and holds(search[k], v)}

    lines = []
    for name, earlier_study in earlier:
        skipped: Counter[str] = Counter()
        added = []
        for trial in own(earlier_study.get_trials(deepcopy=False)):
            if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                continue
            params = kept(trial.params)
            skipped.update(key for key in trial.params if key not in params)
            added.append(optuna.trial.create_trial(
                state=trial.state, values=trial.values, params=params,
                distributions={key: distribution(search[key]) for key in params},
                intermediate_values=trial.intermediate_values,
                user_attrs={WARM_START: f"{name}:{trial.number}"}))
        study.add_trials(added)
        queued = [t for t in ranked(earlier_study)
                  if t.params != baseline][:section.warm_start_top_k]
        for trial in queued:
            study.enqueue_trial(kept(trial.params),
                                user_attrs={QUEUED_FROM: f"{name}:{trial.number}"})
        queue = (f"its best {len(queued)} configurations queued after the untuned default"
                 if queued else "no configuration queued (none of its complete trials differs "
                 "from the untuned default)")
        lines.append(f"warm start from study '{name}': {len(added)} of its finished trials "
                     f"in the sampler's history (not counted as trials of this study), {queue}")
        if skipped:
            listing = ", ".join(f"{key} ({count} trials)" for key, count in sorted(skipped.items()))
            lines.append(f"warm start from study '{name}': parameters this space does not "
                         f"search or whose values its ranges do not hold, left out: {listing}")
    return lines
