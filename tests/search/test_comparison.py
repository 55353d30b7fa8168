"""The paired comparison of two trials on their test predictions, on a study built by hand."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from objectives.base import write_predictions
from search.comparison import COMPARISON, compare, comparison_section, line
from search.errors import InputError
from search.storage import resolve_study
from tests.fakes import register_fake

# Ten test examples: the best trial (1) answers 9 right, the untuned default (0) 3; they
# disagree on six, all in the best trial's favour. McNemar's exact test: 6 discordant pairs,
# none the other way, p = 2 * 0.5**6 = 0.03125.
REFERENCES = ["yes"] * 10
BEST = ["yes"] * 9 + ["no"]
DEFAULT = ["yes"] * 3 + ["no"] * 7


def rows(predictions: list[str], references: list[str] = REFERENCES) -> list[dict[str, str]]:
    return [{"prompt": f"q{i}", "reference": r, "prediction": p}
            for i, (r, p) in enumerate(zip(references, predictions, strict=True))]


@pytest.fixture
def study(studies_dir: Path) -> str:
    register_fake()
    root = studies_dir / "hand"
    root.mkdir(parents=True)
    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{root / 'optuna.db'}",
                                direction="maximize")
    study.set_user_attr("objective", "fake")
    study.set_user_attr("metric", "eval_accuracy")
    for number, (value, answers) in enumerate(((0.3, DEFAULT), (0.9, BEST), (0.5, None))):
        trial_dir = root / "trials" / f"{number:04d}"
        trial_dir.mkdir(parents=True)
        if answers is not None:
            write_predictions(trial_dir, "test", rows(answers))
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"lr": value},
            distributions={"lr": FloatDistribution(0, 1)},
            user_attrs={"trial_dir": str(trial_dir), "baseline": number == 0}))
    return "hand"


def test_best_against_the_untuned_default_by_mcnemar(study: str, studies_dir: Path) -> None:
    result = compare(resolve_study(study))
    assert (result["a"], result["b"], result["n"]) == (1, 0, 10)
    assert result["a_value"] == pytest.approx(0.9) and result["b_value"] == pytest.approx(0.3)
    assert result["difference"] == pytest.approx(0.6)
    assert (result["test"], result["metric"]) == ("McNemar exact", "test_accuracy")
    assert result["p_value"] == pytest.approx(0.03125)
    assert result["ci_low"] <= 0.6 <= result["ci_high"] and result["ci_low"] > 0
    assert len(result["disagreements"]) == 6
    stored = json.loads((studies_dir / "hand" / COMPARISON).read_text())
    assert stored == result
    assert line(result).startswith("best trial 1 vs untuned default: test accuracy 0.9 vs "
                                   "0.3, +0.6 (95% CI +")
    assert line(result).endswith("McNemar exact p=0.031, n=10")
    section = comparison_section(studies_dir / "hand" / COMPARISON)
    assert section.key == "comparison" and section.html.count("<tr>") == 7  # header + 6


def test_trials_named_by_number_and_what_cannot_be_compared(study: str) -> None:
    resolved = resolve_study(study)
    assert compare(resolved, a=0, b=1)["difference"] == pytest.approx(-0.6)
    with pytest.raises(InputError, match="no predictions_test.jsonl"):
        compare(resolved, a=2)
    with pytest.raises(InputError, match="has no trial 7"):
        compare(resolved, a=7)
    with pytest.raises(InputError, match="cannot be compared example by example"):
        compare(resolved, metric="loss")


def test_trials_of_different_test_splits_are_refused(study: str, studies_dir: Path) -> None:
    write_predictions(studies_dir / "hand" / "trials" / "0000", "test",
                      rows(DEFAULT, ["no"] * 10))
    with pytest.raises(InputError, match="answered different test examples"):
        compare(resolve_study(study))
