"""Samplers by name on the fake space: their class, their seed, their options."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from search.distributions import DefineByRun, grid_points
from search.errors import InputError
from search.samplers import SAMPLERS, InOrder, PicklableLock, build_sampler
from search.space import SearchSpace, load_space
from tests.conftest import DATA
from tests.fakes import register_fake

FAKE_SPACE = DATA / "spaces" / "fake.yaml"
SEED = 7  # the fake space's study.seed
# Every sampler can search these, the grid sampler included (floats need a step).
SEARCH = {"fake.learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "step": 0.001},
          "fake.batch_size": {"type": "int", "low": 1, "high": 16}}
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
EXPECTED = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.RandomSampler, "cmaes": optuna.samplers.CmaEsSampler,
            "gp": optuna.samplers.GPSampler, "qmc": optuna.samplers.QMCSampler,
            "nsga2": optuna.samplers.NSGAIISampler, "nsga3": optuna.samplers.NSGAIIISampler}


@pytest.fixture(autouse=True)
def _fake_objective() -> None:
    register_fake()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def fake_space(tmp_path: Path, name: str, search: dict[str, Any] | None = None,
               **options: Any) -> SearchSpace:
    raw = yaml.safe_load(FAKE_SPACE.read_text())
    raw["sampler"] = {"name": name, "options": options}
    raw["search"] = SEARCH if search is None else search
    path = tmp_path / f"fake_{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_space(str(path))


def sampled(sampler: optuna.samplers.BaseSampler, space: SearchSpace,
            n: int = 4) -> list[dict[str, Any]]:
    """The params of the first n trials of a new in-memory study with this sampler."""
    study = optuna.create_study(sampler=sampler)
    define = DefineByRun(space.head.search)
    params = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers, CMA-ES on few params
        for value in range(n):
            trial = study.ask()
            define(trial)
            params.append(trial.params)
            study.tell(trial, float(value))
    return params


def reference(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EXPECTED[name](seed=seed)


def test_every_sampler_name_is_known() -> None:
    assert SAMPLERS == EXPECTED


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sampler_by_name_is_seeded_with_the_study_seed(tmp_path: Path, name: str) -> None:
    space = fake_space(tmp_path, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = build_sampler(space)
    assert type(sampler) is EXPECTED[name]
    params = sampled(sampler, space)
    assert all(set(p) == {"fake.learning_rate", "fake.batch_size"} for p in params)
    # The same trials as the sampler seeded by hand with study.seed, and not as another seed.
    assert params == sampled(reference(name, space, SEED), space)
    assert params != sampled(reference(name, space, SEED + 1), space)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_sampler_pickles_as_ray_tune_pickles_the_searcher(tmp_path: Path,
                                                                 name: str) -> None:
    """Optuna's genetic samplers hold a thread lock since Optuna 5.1: pickled as a new one."""
    space = fake_space(tmp_path, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copy = pickle.loads(pickle.dumps(build_sampler(space)))
    assert type(copy) is EXPECTED[name]
    assert sampled(copy, space) == sampled(build_sampler(space), space)


def test_a_picklable_lock_locks() -> None:
    lock = PicklableLock()
    with lock:
        assert not lock.acquire(blocking=False)
    assert lock.acquire(blocking=False)
    lock.release()
    copy = pickle.loads(pickle.dumps(lock))
    assert isinstance(copy, PicklableLock) and copy.acquire(blocking=False)


def test_the_grid_holds_every_value_of_the_search_section_in_file_order(
        tmp_path: Path) -> None:
    space = fake_space(tmp_path, "grid", search={
        "fake.learning_rate": {"type": "float", "low": 0.01, "high": 0.03, "step": 0.01},
        "fake.behaviour": {"type": "categorical", "choices": ["complete", "prune"]}})
    points = grid_points(space.head.search)
    assert [(round(p["fake.learning_rate"], 6), p["fake.behaviour"]) for p in points] \
        == [(lr, b) for lr in (0.01, 0.02, 0.03) for b in ("complete", "prune")]


def test_a_resumed_search_is_seeded_with_the_studys_history(tmp_path: Path) -> None:
    space = fake_space(tmp_path, "random")
    first = sampled(build_sampler(space), space)
    assert sampled(build_sampler(space, history=0), space) == first
    assert sampled(build_sampler(space, history=4), space) == \
        sampled(reference("random", space, SEED + 4), space)


def test_a_seed_in_the_options_wins_over_the_study_seed(tmp_path: Path) -> None:
    space = fake_space(tmp_path, "random", seed=3)
    assert sampled(build_sampler(space), space) == sampled(reference("random", space, 3), space)


def test_other_options_reach_the_sampler(tmp_path: Path) -> None:
    sampler = build_sampler(fake_space(tmp_path, "tpe", n_startup_trials=3, multivariate=True))
    assert sampler._n_startup_trials == 3 and sampler._multivariate is True
    qmc = build_sampler(fake_space(tmp_path, "qmc", qmc_type="halton", scramble=True))
    assert qmc._qmc_type == "halton"


@pytest.mark.parametrize(("name", "options", "problem"), [
    ("tpe", {"n_startup": 3}, "unexpected keyword argument 'n_startup'"),
    ("random", {"multivariate": True}, "unexpected keyword argument 'multivariate'"),
    ("qmc", {"qmc_type": "nope"}, "The `qmc_type='nope'` is invalid"),
    ("random", {"seed": "x"}, ""),
], ids=["unknown", "not-this-sampler", "bad-value", "bad-seed"])
def test_a_bad_option_is_an_input_error_naming_sampler_options(
        tmp_path: Path, name: str, options: dict[str, Any], problem: str) -> None:
    space = fake_space(tmp_path, name, **options)
    with pytest.raises(InputError) as caught:
        build_sampler(space)
    assert caught.value.field == "sampler.options"
    assert caught.value.source == str(space.source)
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value)


def test_grid_over_a_float_without_step_is_an_input_error(tmp_path: Path) -> None:
    space = fake_space(tmp_path, "grid", search={
        "fake.learning_rate": {"type": "float", "low": 0.001, "high": 0.1}})
    with pytest.raises(InputError) as caught:
        build_sampler(space)
    assert (caught.value.field, caught.value.problem) == (
        "sampler.options", "search.fake.learning_rate: the grid sampler needs choices or a step")


def test_any_error_of_the_samplers_constructor_is_an_input_error(tmp_path: Path) -> None:
    space = fake_space(tmp_path, "grid", search_space=3)
    with pytest.raises(InputError) as caught:
        build_sampler(space)
    assert caught.value.field == "sampler.options"


def multi_objective_with_curves(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """A two-objective study whose PRUNED trials carry learning curves of the first, as
    searches here keep them, with more trials asked of the sampler after them."""
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    define = DefineByRun({key: value for key, value in
                          load_space(str(FAKE_SPACE)).head.search.items()})
    for number in range(14):
        trial = study.ask()
        define(trial)
        if number % 2:
            study._storage.set_trial_intermediate_value(trial._trial_id, 10, float(number))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [float(number), float(-number)])
    return study


def test_optunas_tpe_cannot_rank_curves_of_a_multi_objective_study():
    # What FirstObjectiveCurves is for: if this stops raising, Optuna handles it itself.
    with pytest.raises(RuntimeError, match="single direction cannot be retrieved"):
        multi_objective_with_curves(optuna.samplers.TPESampler(seed=0, n_startup_trials=2))


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random", "qmc", "gp"])
def test_multi_objective_samplers_rank_pruned_trials_by_the_first_metric(tmp_path, name):
    space = fake_space(tmp_path, name)
    space.head.study._metrics = ["eval_loss", "eval_accuracy"]
    space.head.study._directions = ["minimize", "maximize"]
    sampler = build_sampler(space)
    assert type(sampler.inner) is EXPECTED[name]
    if name == "tpe":
        sampler.inner._n_startup_trials = 2
    study = multi_objective_with_curves(sampler)
    assert len(study.trials) == 14 and len(study.best_trials) >= 1


def test_a_reproducible_search_samples_from_the_trials_it_is_shown(tmp_path: Path) -> None:
    space = fake_space(tmp_path, "tpe", n_startup_trials=2)
    raw = yaml.safe_load(space.source.read_text())
    raw["study"]["reproducible"] = True
    space.source.write_text(yaml.safe_dump(raw))
    space = load_space(str(space.source))

    def ask(study: optuna.Study, value: float | None = None) -> optuna.Trial:
        trial = study.ask()
        DefineByRun(space.head.search)(trial)
        if value is not None:
            study.tell(trial, value)
        return trial

    sampler = build_sampler(space)
    assert isinstance(sampler, InOrder)
    assert type(sampler.inner) is optuna.samplers.TPESampler
    study = optuna.create_study(sampler=sampler)
    for value in (0.5, 0.1, 0.9):
        ask(study, value)
    sampler.visible = frozenset({0, 1, 2})
    ask(study, 0.0)  # ends before the next is asked, but is not among the trials shown
    seen = sampler.view(study)
    assert [t.number for t in seen.get_trials(deepcopy=False)] == [0, 1, 2]
    assert [t.number for t in seen._get_trials(deepcopy=False, use_cache=True)] == [0, 1, 2]
    assert [t.number for t in seen.trials] == [0, 1, 2]
    following = ask(study)
    # A run in which that trial had not ended yet proposes the same next trial.
    again = optuna.create_study(sampler=build_sampler(space))
    for value in (0.5, 0.1, 0.9):
        ask(again, value)
    again.sampler.visible = frozenset({0, 1, 2})
    ask(again)  # still running
    assert ask(again).params == following.params
    # Had the sampler been shown the trial that ended, it would have proposed another.
    shown = optuna.create_study(sampler=build_sampler(space))
    for value in (0.5, 0.1, 0.9, 0.0):
        ask(shown, value)
    shown.sampler.visible = frozenset(range(4))
    assert ask(shown).params != following.params
