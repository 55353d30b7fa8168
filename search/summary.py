"""What the user reads when a search ends, and the winner copied to studies/<name>/best/."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from collections.abc import Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from objectives.base import TEST_FIGURE
from search import data_report
from search.history import is_added, ranked
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


def test_figures(trial: FrozenTrial, also: Sequence[str] = ()) -> str:
    """The test-split metrics a trial recorded (test_*, an update's old_test_*), and those
    named in ``also``, as 'test_accuracy 0.8750, ...'."""
    return ", ".join(f"{key} {figure(value)}" for key, value in sorted(trial.user_attrs.items())
                     if (TEST_FIGURE.search(key) or key in also)
                     and isinstance(value, (int, float)) and not isinstance(value, bool))


def figure(value: float) -> str:
    """Four decimals, or a whole number for counts (parameters)."""
    return f"{value:.4f}" if abs(value) < 10_000 else f"{value:,.0f}"


def final_figures(space: SearchSpace) -> list[str]:
    """The objective's metrics reported once, at a trial's end (costs: parameters, size,
    latency; an update's old-data figures), as opposed to those of each evaluation."""
    return [m.name for m in space.objective.metrics_for(space.defaults) if m.final]


FRONT = "front.json"  # in best/ of a multi-objective study: its Pareto front


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial that ran in the study (not one added from an earlier study);
    None if there is none, or the study has several objectives (see pareto_front)."""
    if len(study.directions) > 1:
        return None
    return next(iter(ranked(study)), None)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials of the study no other of its trials beats on every objective, by
    number (trials added from earlier studies are not the study's)."""
    signs = [1 if d == StudyDirection.MINIMIZE else -1 for d in study.directions]
    scored = [(t, [s * v for s, v in zip(signs, t.values, strict=True)])
              for t in ranked(study)]
    return sorted((t for t, mine in scored
                   if not any(all(o <= m for o, m in zip(other, mine, strict=True))
                              and other != mine for _, other in scored)),
                  key=lambda t: t.number)


def save_best(study: optuna.Study, space: SearchSpace, paths: StudyPaths) -> FrozenTrial | None:
    """The best trial's files in best/; for a multi-objective study, every trial of the Pareto
    front's in best/trial_N/ and the front in best/front.json."""
    if space.head.study.multi:
        _save_front(study, space, paths)
        return None
    best = best_trial(study)
    if best is None:
        return None
    space.objective.save_best(paths.trial_dir(best.number), paths.best)
    summary = {"trial": best.number, "value": best.value, "params": best.params,
               "metric": space.head.study.metric, "direction": space.head.study.direction}
    (paths.best / "trial.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return best


def _save_front(study: optuna.Study, space: SearchSpace, paths: StudyPaths) -> None:
    front = pareto_front(study)
    if not front:
        return
    section = space.head.study
    staged = paths.best.with_name(f".{paths.best.name}.{uuid.uuid4().hex}")
    staged.mkdir(parents=True)
    for trial in front:
        space.objective.save_best(paths.trial_dir(trial.number), staged / f"trial_{trial.number}")
    rows = [{"trial": t.number, "values": dict(zip(section.metrics, t.values, strict=True)),
             "params": t.params} for t in front]
    (staged / FRONT).write_text(json.dumps({"metrics": section.metrics,
                                            "directions": section.directions,
                                            "front": rows}, indent=2), encoding="utf-8")
    shutil.rmtree(paths.best, ignore_errors=True)
    staged.rename(paths.best)


def summary_lines(study: optuna.Study, space: SearchSpace, paths: StudyPaths,
                  storage_url: str) -> list[str]:
    metric = space.head.study.metric
    minimize = space.head.study.direction == "minimize"
    counts = {state: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    added = 0
    for trial in study.get_trials(deepcopy=False):
        if is_added(trial):
            added += 1
        elif trial.state in counts:
            counts[trial.state] += 1
    earlier = f" (and {added} trials of earlier studies in its history)" if added else ""
    lines = [
        f"study '{study.study_name}': {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} stopped early, {counts[TrialState.FAIL]} failed{earlier}"
    ]
    best = best_trial(study)
    if space.head.study.multi:
        lines.extend(front_lines(study, space, paths))
    elif best is None:
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
        if figures := test_figures(best, final_figures(space)):
            lines.append(f"best trial {best.number} on the test split: {figures}")
        if baseline is not None and baseline.number != best.number \
                and (figures := test_figures(baseline, final_figures(space))):
            lines.append(f"untuned default (trial {baseline.number}) on the test split: "
                         f"{figures}")
    target = study.study_name if storage_url == default_url(paths) else mask(storage_url)
    data = data_report.summary_line(paths.root)
    if data:
        lines.append(data)
    lines.append(f"report: {paths.root / 'report.html'}")
    lines.append(f"open the study: python launcher.py dashboard {target}")
    return lines


def front_lines(study: optuna.Study, space: SearchSpace, paths: StudyPaths) -> list[str]:
    """The Pareto front: each trial's objective values, parameters and test figures, and the
    untuned default's for reference."""
    section = space.head.study
    front = pareto_front(study)
    if not front:
        return ["no trial completed, so there is no Pareto front"]
    goals = ", ".join(f"{name} {'lower' if way == 'minimize' else 'higher'}"
                      for name, way in zip(section.metrics, section.directions, strict=True))
    lines = [f"Pareto front of {len(front)} trials ({goals} is better; no trial of the study "
             f"beats one of these on every metric); files: {paths.best}/trial_N"]
    baseline = baseline_trial(study)
    numbers = {t.number for t in front}
    shown = [*front, *([baseline] if baseline is not None and baseline.number not in numbers
                       and baseline.state == TrialState.COMPLETE else [])]
    for trial in shown:
        is_baseline = baseline is not None and trial.number == baseline.number
        label = ", ".join(([] if trial.number not in numbers else ["front"])
                          + (["untuned default"] if is_baseline else []))
        values = ", ".join(f"{name} {figure(value)}"
                           for name, value in zip(section.metrics, trial.values, strict=True))
        params = ", ".join(f"{key.rsplit('.', 1)[-1]}={value}"
                           for key, value in trial.params.items())
        lines.append(f"  trial {trial.number} ({label}): {values} | {params}")
        if figures := test_figures(trial, final_figures(space)):
            lines.append(f"      {figures}")
    return lines
