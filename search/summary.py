"""What the user reads when a search ends, and the winner copied to studies/<name>/best/."""

from __future__ import annotations

import json
import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.base import TEST_PREFIX
from search import data_report
from search.space import SearchSpace
from search.storage import StudyPaths, default_url, mask


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("baseline"):
            return trial
    return None


def trial_score(trial: FrozenTrial, minimize: bool) -> float | None:
    """A finished trial's value, or for one stopped early its best evaluation."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if not values:
        return None
    return min(values) if minimize else max(values)


def test_figures(trial: FrozenTrial) -> str:
    """The test-split metrics a trial recorded, as 'test_accuracy 0.8750, ...'."""
    return ", ".join(f"{key} {value:.4f}" for key, value in sorted(trial.user_attrs.items())
                     if key.startswith(TEST_PREFIX) and isinstance(value, (int, float)))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial
        return None


def save_best(study: optuna.Study, space: SearchSpace, paths: StudyPaths) -> FrozenTrial | None:
    best = best_trial(study)
    if best is None:
        return None
    space.objective.save_best(paths.trial_dir(best.number), paths.best)
    summary = {"trial": best.number, "value": best.value, "params": best.params,
               "metric": space.head.study.metric, "direction": space.head.study.direction}
    (paths.best / "trial.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return best


def summary_lines(study: optuna.Study, space: SearchSpace, paths: StudyPaths,
                  storage_url: str) -> list[str]:
    metric = space.head.study.metric
    minimize = space.head.study.direction == "minimize"
    counts = {state: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state in counts:
            counts[trial.state] += 1
    lines = [
        f"study '{study.study_name}': {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} stopped early, {counts[TrialState.FAIL]} failed"
    ]
    best = best_trial(study)
    if best is None:
        lines.append("no trial completed, so there is no best trial")
    else:
        lines.append(f"best trial {best.number}: {metric} {best.value:.4f}")
        lines.extend(f"    {key} = {value}" for key, value in best.params.items())
        lines.append(f"best trial's files and config: {paths.best}")
        baseline = baseline_trial(study)
        base_score = trial_score(baseline, minimize) if baseline else None
        if base_score is not None:
            how = "" if baseline.state == TrialState.COMPLETE else " (stopped early)"
            change = best.value - base_score
            relative = f" ({change / abs(base_score):+.1%})" if base_score else ""
            lines.append(f"untuned default (trial {baseline.number}){how}: {metric} "
                         f"{base_score:.4f}; best is {change:+.4f}{relative}")
        if figures := test_figures(best):
            lines.append(f"best trial {best.number} on the test split: {figures}")
        if baseline is not None and baseline.number != best.number \
                and (figures := test_figures(baseline)):
            lines.append(f"untuned default (trial {baseline.number}) on the test split: "
                         f"{figures}")
    target = study.study_name if storage_url == default_url(paths) else mask(storage_url)
    data = data_report.summary_line(paths.root)
    if data:
        lines.append(data)
    lines.append(f"report: {paths.root / 'report.html'}")
    lines.append(f"open the study: python launcher.py dashboard {target}")
    return lines
