"""Does trial A really beat trial B? A paired comparison on the same test examples.

Both trials answered the same test split (their ``predictions_test.jsonl``, in the split's
order). For accuracy, McNemar's exact test on the examples where exactly one is right; for
any metric the objective can compute from predictions, a paired bootstrap 95 % confidence
interval of the difference, and for metrics other than accuracy a paired permutation test.
Written to ``studies/<name>/comparison.json`` and drawn in the report.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from objectives.base import (
    DataError,
    Objective,
    ReportSection,
    read_predictions,
    write_predictions,
)
from search.errors import InputError, from_data
from search.significance import bootstrap_difference, mcnemar_exact, paired_permutation_p
from search.storage import ResolvedStudy, resolve_study
from search.summary import baseline_trial, best_trial

COMPARISON = "comparison.json"
SPLIT = "test"
# Label metrics read together: a search on one also tests the other.
COMPANIONS = {"accuracy": "macro_f1", "macro_f1": "accuracy"}
ANSWERS = "answers"  # per study: other studies' trials answering its splits, for compare
MAX_DISAGREEMENTS = 50  # rows of the report's table of examples the two answer differently


def pick_metric(objective: Objective, study_metric: str, asked: str | None) -> str:
    """The metric to compare, without split prefix: the one asked for, else the study's if it
    comes from predictions, else the objective's first that does."""
    from_predictions = [m.name.removeprefix("eval_") for m in objective.metrics if m.per_example]
    if asked is not None:
        name = asked.removeprefix("eval_").removeprefix(f"{SPLIT}_")
        if name not in from_predictions:
            raise InputError("--metric", "", f"{asked!r} cannot be compared example by "
                             f"example; choose one of {', '.join(from_predictions)}")
        return name
    if not from_predictions:
        raise InputError("--metric", "", f"the {objective.name} objective computes no metric "
                         "from predictions")
    study = study_metric.removeprefix("eval_")
    return study if study in from_predictions else from_predictions[0]


def companion(objective: Objective, compared: str) -> str | None:
    """The label metric read beside ``compared`` (test_accuracy or test_macro_f1), when the
    objective computes it from predictions: the search's summary tests both."""
    other = COMPANIONS.get(compared.removeprefix(f"{SPLIT}_"))
    metric = objective.metric(f"eval_{other}") if other else None
    return other if metric is not None and metric.per_example else None


def compare(resolved: ResolvedStudy, a: int | None = None, b: int | str | None = None,
            metric: str | None = None, seed: int = 0, save: bool = True,
            split: str = SPLIT) -> dict[str, Any]:
    """Compare trial ``a`` (default: the best) with ``b`` (default: the untuned default; or
    ``STUDY[:TRIAL]``, a trial of another study) on ``split`` and (with ``save``) write
    comparison.json; returns its content."""
    study = resolved.study
    objective = resolved.objective()
    name = pick_metric(objective, str(study.user_attrs.get("metric", "")), metric)
    trial_a, trial_b, rows_a, rows_b, labels = _pair(resolved, a, b, split)
    labelled = {trial.number: label for trial, label in
                ((baseline_trial(study), "untuned default"), (best_trial(study), "best trial {}"))
                if trial is not None}
    b_label = labelled.get(trial_b.number, "trial {}").format(trial_b.number)
    if isinstance(b, str):
        b_label = f"study '{b.partition(':')[0]}' trial {trial_b.number}"

    def score(rows: list[dict[str, str]]) -> float:
        return objective.score(name, rows, labels)

    low, high = bootstrap_difference(rows_a, rows_b, score, seed=seed)
    if name == "accuracy":
        right_a = [score([row]) == 1.0 for row in rows_a]
        right_b = [score([row]) == 1.0 for row in rows_b]
        p_value, _, _ = mcnemar_exact(right_a, right_b)
        test = "McNemar exact"
    else:
        p_value = paired_permutation_p(rows_a, rows_b, score, seed=seed)
        test = "paired permutation"
    a_value, b_value = score(rows_a), score(rows_b)
    result = {
        "metric": f"{split}_{name}", "split": split, "a": trial_a.number, "b": trial_b.number,
        "a_label": labelled.get(trial_a.number, "trial {}").format(trial_a.number),
        "b_label": b_label,
        "a_value": a_value, "b_value": b_value, "difference": a_value - b_value,
        "ci_low": low, "ci_high": high, "confidence": 0.95, "p_value": p_value,
        "n": len(rows_a), "test": test,
        "disagreements": [
            {"prompt": x["prompt"], "reference": x["reference"], "a": x["prediction"],
             "b": y["prediction"]}
            for x, y in zip(rows_a, rows_b, strict=True) if x["prediction"] != y["prediction"]
        ][:MAX_DISAGREEMENTS],
    }
    if save:
        resolved.paths.root.mkdir(parents=True, exist_ok=True)
        (resolved.paths.root / COMPARISON).write_text(
            json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def _pair(resolved: ResolvedStudy, a: int | None, b: int | str | None, split: str = SPLIT):
    """Trials A and B (defaults: the best, the untuned default; B may be ``STUDY[:TRIAL]`` of
    another study), their predictions on ``split`` in the same example order, and the label
    set."""
    study = resolved.study
    trial_a = resolved.trial(a)
    other = resolved
    if isinstance(b, str):
        name, _, number = b.partition(":")
        other = resolve_study(name)
        b = int(number) if number.isdigit() else None
    elif b is None:
        baseline = baseline_trial(study)
        if baseline is None:
            raise InputError(study.study_name, "", "no untuned default trial; name one with --b")
        b = baseline.number
    trial_b = other.trial(b)
    rows_a, labels = _rows(resolved, trial_a, split)
    if other is resolved:
        rows_b, _ = _rows(other, trial_b, split)
        if _examples(rows_a) != _examples(rows_b):
            raise InputError(study.study_name, "", f"trials {trial_a.number} and "
                             f"{trial_b.number} answered different {split} examples")
        return trial_a, trial_b, rows_a, rows_b, labels
    rows_b = _answers(resolved, trial_a, rows_a, other, trial_b, split)
    return trial_a, trial_b, rows_a, rows_b, labels


def _examples(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(row["prompt"], row["reference"]) for row in rows]


def _answers(resolved: ResolvedStudy, trial_a, rows_a: list[dict[str, str]],
             other: ResolvedStudy, trial_b, split: str) -> list[dict[str, str]]:
    """Trial B of another study on A's ``split``: its own test predictions when that is the
    same examples (an update's old_test is the test split of the study it replayed), else its
    model answers A's split (once; kept in ``answers/`` of A's study)."""
    rows_b = _own_rows(other, trial_b, split)
    if rows_b is not None and _examples(rows_b) == _examples(rows_a):
        return rows_b
    objective = resolved.objective()
    if other.objective().name != objective.name:
        raise InputError("--b", "", f"study {other.study.study_name!r} trains another "
                         f"objective ({other.objective().name}); its answers cannot be compared")
    kept = resolved.paths.root / ANSWERS / f"{other.study.study_name}-{trial_b.number}"
    try:
        return read_predictions(kept, split)[0]
    except DataError:
        pass
    try:
        rows_b = objective.answer(other.paths.folder_of(trial_b), resolved.paths.folder_of(
            trial_a), resolved.paths.prepared, split)
    except DataError as error:
        raise from_data(error, resolved.study.study_name) from None
    kept.mkdir(parents=True, exist_ok=True)
    write_predictions(kept, split, rows_b)
    return rows_b


def _own_rows(other: ResolvedStudy, trial, split: str) -> list[dict[str, str]] | None:
    """Another study's trial's predictions on ``split``, or on its test split when it has
    none of that name; None when it has neither."""
    folder = other.paths.folder_of(trial)
    for name in dict.fromkeys((split, SPLIT)):
        try:
            return read_predictions(folder, name)[0]
        except DataError:
            continue
    return None


def sheet_rows(resolved: ResolvedStudy, a: int | None, b: int | None):
    """Rows of A and B and the label set, for a sheet people rate."""
    _, _, rows_a, rows_b, labels = _pair(resolved, a, b)
    return rows_a, rows_b, labels


def _rows(resolved: ResolvedStudy, trial, split: str = SPLIT
          ) -> tuple[list[dict[str, str]], list[str] | None]:
    try:
        return read_predictions(resolved.paths.folder_of(trial), split)
    except DataError as error:
        raise from_data(error, resolved.study.study_name) from None


def _p(p_value: float) -> str:
    return "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"


def line(result: dict[str, Any]) -> str:
    """e.g. best trial 6 vs untuned default: test accuracy 0.87 vs 0.41, +0.46 (95% CI +0.38
    to +0.54), McNemar exact p<0.001, n=120"""
    split = result.get("split", SPLIT)
    metric = f"{split} {result['metric'].removeprefix(f'{split}_')}"
    return (f"{result['a_label']} vs {result['b_label']}: {metric} {result['a_value']:.4g} vs "
            f"{result['b_value']:.4g}, {result['difference']:+.4g} (95% CI "
            f"{result['ci_low']:+.4g} to {result['ci_high']:+.4g}), {result['test']} "
            f"{_p(result['p_value'])}, n={result['n']}")


def comparison_section(path: Path) -> ReportSection:
    """The report's section: the figures, then the test examples the two answer differently."""
    result = json.loads(path.read_text(encoding="utf-8"))
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[key]))}</td>"
                         for key in ("prompt", "reference", "a", "b")) + "</tr>"
        for row in result["disagreements"])
    table = (f'<div class="scroll"><table><tr><th>prompt</th><th>reference</th>'
             f"<th>{html.escape(result['a_label'])}</th>"
             f"<th>{html.escape(result['b_label'])}</th></tr>{rows}</table></div>"
             if rows else '<p class="note">The two answer every test example alike.</p>')
    shown = len(result["disagreements"])
    first = f" (the first {shown})" if shown == MAX_DISAGREEMENTS else ""
    return ReportSection("comparison", "Is the best trial really better? (test split)",
                         f"<p>{html.escape(line(result))}</p>"
                         f'<p class="note">Paired on the same {result["n"]} test examples; '
                         f"those on which the answers differ are listed{first}.</p>{table}")
