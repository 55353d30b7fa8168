"""The end-of-search summary and the winner's copy, on studies built trial by trial."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search import summary  # not its test_figures by name: pytest would collect it
from search.space import SearchSpace, load_space
from search.storage import StudyPaths, default_url
from search.summary import baseline_trial, save_best, summary_lines, trial_score
from tests.conftest import DATA
from tests.fakes import register_fake

FAKE_SPACE = DATA / "spaces" / "fake.yaml"
LR = "fake.learning_rate"
DISTRIBUTIONS = {LR: FloatDistribution(0.001, 0.1, log=True)}


@pytest.fixture(autouse=True)
def _fake_objective() -> None:
    register_fake()


@pytest.fixture
def space() -> SearchSpace:
    return load_space(str(FAKE_SPACE))


@pytest.fixture
def paths(tmp_path: Path) -> StudyPaths:
    return StudyPaths(tmp_path / "studies" / "fake")


def trial(state: TrialState, lr: float, value: float | None = None,
          intermediate: dict[int, float] | None = None, **attrs: Any) -> FrozenTrial:
    return create_trial(state=state, value=value, params={LR: lr}, distributions=DISTRIBUTIONS,
                        user_attrs=attrs, intermediate_values=intermediate or {})


def study_of(*trials: FrozenTrial, direction: str = "minimize") -> optuna.Study:
    # In memory: the summary reads the study, and names its storage by the URL it is given.
    study = optuna.create_study(study_name="fake", direction=direction)
    for each in trials:
        study.add_trial(each)
    return study


def searched() -> optuna.Study:
    """A baseline, a better trial, one stopped early and one failed."""
    return study_of(
        trial(TrialState.COMPLETE, 0.01, 1.5, {10: 2.0, 20: 1.6}, baseline=True,
              test_accuracy=0.6, test_loss=1.6),
        trial(TrialState.COMPLETE, 0.012, 1.2, {10: 1.9, 20: 1.3}, test_accuracy=0.75,
              test_loss=1.25, eval_accuracy=0.8, config={"fake": {}}),
        trial(TrialState.PRUNED, 0.09, None, {10: 3.0}, prune_reason="stopped early"),
        trial(TrialState.FAIL, 0.05, fail_reason="ValueError: x"),
    )


def test_summary_names_the_best_trial_and_compares_it_with_the_baseline(
        space: SearchSpace, paths: StudyPaths) -> None:
    study = searched()
    assert summary_lines(study, space, paths, default_url(paths)) == [
        "study 'fake': 2 complete, 1 stopped early, 1 failed",
        "best trial 1: eval_loss 1.2000",
        "    fake.learning_rate = 0.012",
        f"best trial's files and config: {paths.best}",
        "untuned default (trial 0): eval_loss 1.5000; best is -0.3000 (-20.0%)",
        "best trial 1 on the test split: test_accuracy 0.7500, test_loss 1.2500",
        "untuned default (trial 0) on the test split: test_accuracy 0.6000, test_loss 1.6000",
        f"report: {paths.root / 'report.html'}",
        "open the study: python launcher.py dashboard fake",
    ]


def test_a_study_kept_elsewhere_is_named_by_its_masked_url(
        space: SearchSpace, paths: StudyPaths) -> None:
    study = searched()
    lines = summary_lines(study, space, paths, "postgresql://ft:secret@db.example/ft")
    assert lines[-1] == "open the study: python launcher.py dashboard postgresql://ft:***@db.example/ft"
    assert "secret" not in "\n".join(lines)


def test_baseline_stopped_early_is_compared_by_its_best_evaluation(
        space: SearchSpace, paths: StudyPaths) -> None:
    study = study_of(
        trial(TrialState.PRUNED, 0.01, None, {10: 2.5, 20: 2.0, 30: math.nan}, baseline=True),
        trial(TrialState.COMPLETE, 0.012, 1.5, {10: 1.9}, test_accuracy=0.7),
    )
    lines = summary_lines(study, space, paths, default_url(paths))
    assert lines[0] == "study 'fake': 1 complete, 1 stopped early, 0 failed"
    assert ("untuned default (trial 0) (stopped early): eval_loss 2.0000; best is -0.5000 "
            "(-25.0%)") in lines
    # The baseline recorded no test figures: no line for them.
    assert [line for line in lines if "on the test split" in line] == [
        "best trial 1 on the test split: test_accuracy 0.7000"]


def test_baseline_that_is_best_is_not_compared_twice(space: SearchSpace,
                                                     paths: StudyPaths) -> None:
    study = study_of(
        trial(TrialState.COMPLETE, 0.01, 1.0, baseline=True, test_accuracy=0.9),
        trial(TrialState.COMPLETE, 0.05, 2.0, test_accuracy=0.5),
    )
    lines = summary_lines(study, space, paths, default_url(paths))
    assert "best trial 0: eval_loss 1.0000" in lines
    assert "untuned default (trial 0): eval_loss 1.0000; best is +0.0000 (+0.0%)" in lines
    assert [line for line in lines if "on the test split" in line] == [
        "best trial 0 on the test split: test_accuracy 0.9000"]


def test_baseline_that_failed_is_not_compared(space: SearchSpace, paths: StudyPaths) -> None:
    study = study_of(trial(TrialState.FAIL, 0.01, baseline=True),
                     trial(TrialState.COMPLETE, 0.05, 2.0))
    lines = summary_lines(study, space, paths, default_url(paths))
    assert lines[:2] == ["study 'fake': 1 complete, 0 stopped early, 1 failed",
                         "best trial 1: eval_loss 2.0000"]
    assert not any(line.startswith("untuned default") for line in lines)


def test_no_complete_trial_means_no_best_trial(space: SearchSpace, paths: StudyPaths) -> None:
    study = study_of(trial(TrialState.PRUNED, 0.01, None, {10: 2.0}, baseline=True),
                     trial(TrialState.FAIL, 0.05))
    assert summary_lines(study, space, paths, default_url(paths)) == [
        "study 'fake': 0 complete, 1 stopped early, 1 failed",
        "no trial completed, so there is no best trial",
        f"report: {paths.root / 'report.html'}",
        "open the study: python launcher.py dashboard fake",
    ]
    assert save_best(study, space, paths) is None
    assert not paths.best.exists()


def test_save_best_copies_the_winners_files_and_describes_it(
        space: SearchSpace, paths: StudyPaths) -> None:
    study = searched()
    for number in (0, 1):
        paths.trial_dir(number).mkdir(parents=True)
        (paths.trial_dir(number) / "weights.json").write_text(json.dumps({"trial": number}))
    best = save_best(study, space, paths)
    assert best is not None and best.number == 1
    assert json.loads((paths.best / "weights.json").read_text()) == {"trial": 1}
    assert json.loads((paths.best / "trial.json").read_text()) == {
        "trial": 1, "value": 1.2, "params": {LR: 0.012}, "metric": "eval_loss",
        "direction": "minimize"}


def test_trial_score_is_the_value_or_the_best_finite_evaluation() -> None:
    done = trial(TrialState.COMPLETE, 0.01, 1.5, {10: 0.5})
    assert trial_score(done, minimize=True) == 1.5
    assert trial_score(done, minimize=False) == 1.5
    stopped = trial(TrialState.PRUNED, 0.01, None, {10: 3.0, 20: math.nan, 30: 2.5,
                                                    40: math.inf})
    assert trial_score(stopped, minimize=True) == 2.5
    assert trial_score(stopped, minimize=False) == 3.0
    assert trial_score(trial(TrialState.PRUNED, 0.01, None, {10: math.nan}), True) is None
    assert trial_score(trial(TrialState.FAIL, 0.01), True) is None


def test_maximised_metric_scores_and_summarises_upwards(space: SearchSpace,
                                                        paths: StudyPaths) -> None:
    space.head.study.metric, space.head.study.direction = "eval_accuracy", "maximize"
    study = study_of(
        trial(TrialState.PRUNED, 0.01, None, {10: 0.4, 20: 0.5}, baseline=True),
        trial(TrialState.COMPLETE, 0.012, 0.8),
        trial(TrialState.COMPLETE, 0.05, 0.6),
        direction="maximize",
    )
    lines = summary_lines(study, space, paths, default_url(paths))
    assert lines[1] == "best trial 1: eval_accuracy 0.8000"
    assert ("untuned default (trial 0) (stopped early): eval_accuracy 0.5000; "
            "best is +0.3000 (+60.0%)") in lines


def test_test_figures_are_the_numeric_test_attributes_in_name_order() -> None:
    each = trial(TrialState.COMPLETE, 0.01, 1.0, test_loss=0.123456, test_accuracy=0.5,
                 test_note="not a number", eval_accuracy=0.9, baseline=True)
    assert summary.test_figures(each) == "test_accuracy 0.5000, test_loss 0.1235"
    assert summary.test_figures(trial(TrialState.COMPLETE, 0.01, 1.0)) == ""


def test_baseline_trial_is_the_one_flagged() -> None:
    study = searched()
    assert baseline_trial(study).number == 0
    assert baseline_trial(study_of(trial(TrialState.COMPLETE, 0.01, 1.0))) is None


def test_a_baseline_scoring_zero_gets_no_relative_change(space: SearchSpace,
                                                         paths: StudyPaths) -> None:
    space.head.study.metric, space.head.study.direction = "eval_accuracy", "maximize"
    study = study_of(trial(TrialState.COMPLETE, 0.01, 0.0, baseline=True),
                     trial(TrialState.COMPLETE, 0.012, 0.8), direction="maximize")
    lines = summary_lines(study, space, paths, default_url(paths))
    assert "untuned default (trial 0): eval_accuracy 0.0000; best is +0.8000" in lines
