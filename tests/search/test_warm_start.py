"""Warm starts: an earlier study's finished trials join a new study's history (marked, not
counted, never its best), its best configurations are queued after the untuned default, and
parameters this space cannot hold are left out and named."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.errors import InputError
from search.heartbeat import finished_count, is_counted
from search.history import QUEUED_FROM, WARM_START
from search.schedulers import BASELINE
from search.space import load_space
from search.storage import StudyPaths, default_url
from search.summary import best_trial, pareto_front, summary_lines
from search.warm_start import earlier_studies, seed_study
from tests.conftest import DATA
from tests.fakes import register_fake

FAKE = DATA / "spaces" / "fake.yaml"
RATE = FloatDistribution(0.001, 0.1, log=True)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(autouse=True)
def _fake() -> None:
    register_fake()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def earlier(name: str, metric: str = "eval_loss", direction: str = "minimize") -> None:
    """A finished study of the fake space's parameter, and one it no longer searches."""
    paths = StudyPaths.for_study(name)
    paths.root.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=default_url(paths),
                                direction=direction)
    study.set_user_attr("metric", metric)
    study.set_metric_names([metric])
    rows = [(0.01, 0.9, TrialState.COMPLETE), (0.05, 0.4, TrialState.COMPLETE),
            (0.002, 0.7, TrialState.COMPLETE), (0.5, None, TrialState.PRUNED),
            (0.03, 0.2, TrialState.COMPLETE), (0.02, None, TrialState.FAIL)]
    for rate, value, state in rows:
        study.add_trial(create_trial(
            state=state, value=value, params={"fake.learning_rate": rate, "fake.old": "x"},
            distributions={"fake.learning_rate": FloatDistribution(0.001, 1.0, log=True),
                           "fake.old": CategoricalDistribution(["x"])},
            intermediate_values={10: 1.5} if state == TrialState.PRUNED else {}))


def space_with(tmp_path: Path, **study) -> object:
    raw = yaml.safe_load(FAKE.read_text())
    raw["study"].update(study)
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_space(str(path))


def new_study(space) -> optuna.Study:
    paths = StudyPaths.for_study("warm")
    paths.root.mkdir(parents=True)
    study = optuna.create_study(study_name="warm", storage=default_url(paths))
    study.set_user_attr("metric", "eval_loss")
    study.enqueue_trial(space.baseline_params(), user_attrs={BASELINE: True})
    return study


def test_earlier_trials_join_the_history_marked_and_not_counted(tmp_path):
    earlier("january")
    space = space_with(tmp_path, warm_start="january", warm_start_top_k=2)
    study = new_study(space)
    lines = seed_study(study, space, earlier_studies(space))
    assert lines == [
        "warm start from study 'january': 5 of its finished trials in the sampler's history "
        "(not counted as trials of this study), its best 2 configurations queued after the "
        "untuned default",
        "warm start from study 'january': parameters this space does not search or whose "
        "values its ranges do not hold, left out: fake.learning_rate (1 trials), fake.old "
        "(5 trials)"]
    trials = study.get_trials()
    added = [t for t in trials if WARM_START in t.user_attrs]
    assert [t.user_attrs[WARM_START] for t in added] == [f"january:{n}" for n in range(5)]
    assert [t.state for t in added] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED,
                                                                   TrialState.COMPLETE]
    assert added[3].params == {} and added[3].intermediate_values == {10: 1.5}
    assert added[1].params == {"fake.learning_rate": 0.05} and added[1].value == 0.4
    assert added[1].distributions == {"fake.learning_rate": RATE}
    assert not any(map(is_counted, added)) and finished_count(study) == 0
    # The baseline runs first, then the two best (0.2 and 0.4), each naming its origin.
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs.get(QUEUED_FROM) for t in waiting] == [None, "january:4",
                                                                 "january:1"]
    assert waiting[0].user_attrs[BASELINE]
    assert [t.system_attrs["fixed_params"] for t in waiting[1:]] == [
        {"fake.learning_rate": 0.03}, {"fake.learning_rate": 0.05}]


def test_an_added_trial_is_never_the_best_nor_on_the_front(tmp_path):
    earlier("january")
    space = space_with(tmp_path, warm_start=["january"])
    study = new_study(space)
    seed_study(study, space, earlier_studies(space))
    assert best_trial(study) is None and pareto_front(study) == []
    trial = study.ask()
    trial.suggest_float("fake.learning_rate", 0.001, 0.1, log=True)
    study.tell(trial, 0.8)  # worse than every added trial, and still the study's best
    assert best_trial(study).number == trial.number
    lines = summary_lines(study, space, StudyPaths.for_study("warm"),
                          default_url(StudyPaths.for_study("warm")))
    assert lines[0] == ("study 'warm': 1 complete, 0 stopped early, 0 failed (and 5 trials of "
                        "earlier studies in its history)")


def test_a_missing_study_or_another_metric_is_one_line_naming_the_field(tmp_path):
    space = space_with(tmp_path, warm_start=["nobody"])
    with pytest.raises(InputError) as caught:
        earlier_studies(space)
    assert caught.value.field == "study.warm_start"
    assert caught.value.problem.startswith("'nobody': nobody: no study of that name")
    earlier("accuracy_study", metric="eval_accuracy", direction="maximize")
    space = space_with(tmp_path, warm_start=["accuracy_study"])
    with pytest.raises(InputError) as caught:
        earlier_studies(space)
    assert caught.value.problem == ("study 'accuracy_study' optimised eval_accuracy; this "
                                    "search optimises eval_loss: its values would mislead "
                                    "the sampler")
    with pytest.raises(InputError, match="study.warm_start: '../x' is not a study name"):
        space_with(tmp_path, warm_start=["../x"])
