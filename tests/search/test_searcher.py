"""StudySearcher driven as Ray drives it (suggest, results, completion), without a Tune run:
a real SQLite study, the fake objective's space, and Ray's OptunaSearch underneath."""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

import search.searcher
from search.distributions import DefineByRun
from search.heartbeat import HEARTBEAT, INTERRUPTED, STALE_AFTER_S
from search.samplers import build_sampler
from search.searcher import StudySearcher
from search.space import SearchSpace, load_space
from search.storage import StudyPaths, open_storage
from tests.conftest import DATA
from tests.fakes import register_fake

FAKE_SPACE = DATA / "spaces" / "fake.yaml"
OOM_SPACE = DATA / "spaces" / "fake_oom.yaml"


@pytest.fixture(autouse=True)
def _fake_objective() -> None:
    register_fake()


def make_searcher(tmp_path: Path, space_file: Path = FAKE_SPACE, n_trials: int = 6,
                  sampler: optuna.samplers.BaseSampler | None = None,
                  ) -> tuple[StudySearcher, SearchSpace, StudyPaths]:
    space = load_space(str(space_file))
    storage = open_storage(f"sqlite:///{tmp_path / 'db' / 'optuna.db'}")
    paths = StudyPaths(tmp_path / "fake")
    searcher = StudySearcher(space, "fake", storage, paths,
                             sampler or optuna.samplers.RandomSampler(seed=0), n_trials)
    return searcher, space, paths


def stored(searcher: StudySearcher, number: int) -> optuna.trial.FrozenTrial:
    """The trial as a fresh reader of the storage sees it."""
    study = optuna.load_study(study_name="fake", storage=searcher.storage)
    return study.get_trials(deepcopy=False)[number]


def complete_report(value: float, step: int = 30, **extra: float) -> dict:
    return {"step": step, "eval_loss": value, "outcome": "complete", **extra}


def test_ray_optuna_search_keeps_the_private_attributes_the_searcher_reads() -> None:
    # StudySearcher reads _ot_study, _ot_trials and _completed_trials of Ray's OptunaSearch,
    # which has no public API for them: a Ray upgrade that renames them fails here.
    register_fake()
    space = load_space(str(FAKE_SPACE))
    ray_searcher = OptunaSearch(space=DefineByRun(space.head.search), metric="eval_loss",
                                mode="min", sampler=optuna.samplers.RandomSampler(seed=0))
    assert isinstance(ray_searcher._ot_study, optuna.Study)
    assert ray_searcher._ot_trials == {}
    assert ray_searcher._completed_trials == set()
    # What they hold: the asked trial per Ray trial id, and the ids told to the study.
    params = ray_searcher.suggest("r1")
    assert set(params) == {"fake.learning_rate"}
    assert isinstance(ray_searcher._ot_trials["r1"], optuna.Trial)
    assert ray_searcher._ot_trials["r1"].number == 0
    ray_searcher.on_trial_complete("r1", {"eval_loss": 1.0})
    assert ray_searcher._completed_trials == {"r1"}
    assert ray_searcher._ot_study.trials[0].state == TrialState.COMPLETE


def test_intermediate_values_are_keyed_by_the_reported_step(tmp_path: Path) -> None:
    searcher, _, paths = make_searcher(tmp_path)
    config = searcher.suggest("t0")
    assert config["trial_number"] == 0 and config["baseline"] is False
    # Ray adds training_iteration (1, 2, ...); the study keys by the optimizer step.
    searcher.on_trial_result("t0", {"step": 10, "eval_loss": 2.5, "training_iteration": 1})
    searcher.on_trial_result("t0", {"step": 20, "eval_loss": 1.5, "training_iteration": 2})
    searcher.on_trial_result("t0", {"step": 20, "eval_loss": 9.0, "training_iteration": 3})
    searcher.on_trial_result("t0", {"step": 15, "eval_loss": 9.0, "training_iteration": 4})
    searcher.on_trial_result("t0", {"step": 25, "eval_loss": math.nan})
    searcher.on_trial_complete("t0", complete_report(
        1.25, eval_accuracy=0.8, test_loss=1.3, test_accuracy=0.7, training_iteration=5,
        node_ip="127.0.0.2"))
    trial = stored(searcher, 0)
    assert trial.intermediate_values == {10: 2.5, 20: 1.5}
    assert trial.state == TrialState.COMPLETE and trial.value == 1.25
    # Final metrics (declared ones and test_*) are user attributes; the study metric, the step
    # and Ray's bookkeeping are not.
    assert trial.user_attrs["test_loss"] == 1.3
    assert trial.user_attrs["test_accuracy"] == 0.7
    assert trial.user_attrs["eval_accuracy"] == 0.8
    assert trial.user_attrs["node_ip"] == "127.0.0.2"
    assert trial.user_attrs["ray_trial_id"] == "t0"
    assert trial.user_attrs["trial_dir"] == str(paths.trial_dir(0))
    assert trial.user_attrs["config"]["fake"]["learning_rate"] == \
        trial.params["fake.learning_rate"]
    assert set(trial.user_attrs) == {"config", "trial_dir", "ray_trial_id", "node_ip",
                                     "eval_accuracy", "test_loss", "test_accuracy"}
    # Ray may report a completion twice; the second changes nothing.
    searcher.on_trial_complete("t0", complete_report(7.0))
    assert stored(searcher, 0).value == 1.25
    assert searcher.running() == []


def test_trial_ended_without_a_last_report_was_stopped_by_the_scheduler(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"step": 10, "eval_loss": 3.0})
    # The result on which ASHA decided to stop reaches the searcher only here.
    searcher.on_trial_complete("t0", {"step": 20, "eval_loss": 2.75})
    trial = stored(searcher, 0)
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"] == "stopped early by the scheduler at step 20"
    assert trial.intermediate_values == {10: 3.0, 20: 2.75}
    assert not any(key.startswith("test_") for key in trial.user_attrs)


def test_trial_that_pruned_itself_keeps_its_reason(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"step": 10, "eval_loss": 3.0})
    searcher.on_trial_complete("t0", {"step": 10, "eval_loss": math.nan, "outcome": "pruned",
                                      "reason": "the fake objective was asked to stop"})
    trial = stored(searcher, 0)
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"] == "the fake objective was asked to stop"
    assert trial.intermediate_values == {10: 3.0}


def test_failed_outcome_is_fail_with_its_reason(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {
        "step": 0, "eval_loss": math.nan, "outcome": "failed", "out_of_memory": False,
        "reason": "ValueError: the fake objective was asked to raise", "test_accuracy": 0.5})
    trial = stored(searcher, 0)
    assert trial.state == TrialState.FAIL and trial.value is None
    assert trial.user_attrs["fail_reason"] == "ValueError: the fake objective was asked to raise"
    assert "test_accuracy" not in trial.user_attrs and "prune_reason" not in trial.user_attrs
    assert trial.intermediate_values == {}
    # Without retry_on_oom nothing is enqueued.
    assert len(searcher.study.trials) == 1


def test_worker_that_died_for_good_is_fail(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"step": 10, "eval_loss": 3.0})
    searcher.on_trial_complete("t0", {"step": 10, "eval_loss": 3.0}, error=True)
    trial = stored(searcher, 0)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == \
        "the trial's worker died and could not be restarted"


def test_enqueued_baseline_is_suggested_first_with_its_flag(tmp_path: Path) -> None:
    searcher, space, paths = make_searcher(tmp_path)
    searcher.study.enqueue_trial(space.baseline_params(), user_attrs={"baseline": True})
    assert searcher.suggest("base") == {"trial_number": 0,
                                        "params": {"fake.learning_rate": 0.01},
                                        "overrides": {}, "baseline": True}
    other = searcher.suggest("other")
    assert other["trial_number"] == 1 and other["baseline"] is False
    assert other["params"]["fake.learning_rate"] != 0.01
    assert stored(searcher, 0).user_attrs["baseline"] is True
    assert stored(searcher, 0).user_attrs["config"] == space.trial_config(
        {"fake.learning_rate": 0.01}).model_dump(mode="json")
    assert {t.number for t in searcher.running()} == {0, 1}
    assert searcher.live_trial("base").number == 0


def test_suggest_finishes_once_the_study_holds_n_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search.searcher, "RECOUNT_S", 0)
    searcher, _, _ = make_searcher(tmp_path, n_trials=2)
    assert searcher.suggest("a")["trial_number"] == 0
    assert searcher.suggest("b")["trial_number"] == 1
    # Both places taken by running trials: wait, and ask the study for no new trial.
    assert searcher.suggest("c") is None
    assert len(searcher.study.trials) == 2
    searcher.on_trial_complete("a", complete_report(1.0))
    assert searcher.suggest("c") is None
    searcher.on_trial_complete("b", {"step": 10, "eval_loss": 2.0})  # PRUNED counts too
    assert searcher.suggest("c") == Searcher.FINISHED
    assert len(searcher.study.trials) == 2


def test_waiting_searcher_looks_again_only_after_the_recount_interval(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path, n_trials=1)
    searcher.suggest("a")
    before = time.monotonic()
    assert searcher.suggest("b") is None
    assert searcher._next_count >= before + search.searcher.RECOUNT_S
    searcher.on_trial_complete("a", complete_report(1.0))
    assert searcher.suggest("b") is None  # still within the interval: not counted again
    searcher._next_count = 0.0
    assert searcher.suggest("b") == Searcher.FINISHED


def test_interrupted_trials_do_not_count_and_stale_ones_are_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search.searcher, "RECOUNT_S", 0)
    searcher, _, _ = make_searcher(tmp_path, n_trials=2)
    assert searcher.suggest("a")["trial_number"] == 0
    searcher.on_trial_complete("a", complete_report(1.0))
    # Another launcher asked for a trial and died long ago.
    dead = searcher.study.ask()
    dead.set_user_attr(HEARTBEAT, time.time() - STALE_AFTER_S - 1)
    assert searcher.suggest("b") is None  # 1 counted + 1 running fill the study: wait...
    assert stored(searcher, 1).state == TrialState.FAIL  # ...after marking it interrupted
    assert stored(searcher, 1).user_attrs["fail_reason"] == INTERRUPTED
    config = searcher.suggest("b")  # its replacement
    assert config["trial_number"] == 2
    searcher.on_trial_complete("b", complete_report(2.0))
    assert searcher.suggest("c") == Searcher.FINISHED


def test_out_of_memory_is_retried_once_with_the_objectives_overrides(tmp_path: Path) -> None:
    searcher, _, paths = make_searcher(tmp_path, OOM_SPACE, n_trials=4)
    first = searcher.suggest("a")
    oom = {"step": 0, "eval_loss": math.nan, "outcome": "failed", "out_of_memory": True,
           "reason": "OutOfMemoryError: CUDA out of memory (fake)"}
    searcher.on_trial_complete("a", oom)
    original = stored(searcher, 0)
    assert original.state == TrialState.FAIL
    assert original.user_attrs["fail_reason"] == "OutOfMemoryError: CUDA out of memory (fake)"
    assert original.user_attrs["retried_as"] == 1
    waiting = stored(searcher, 1)
    assert waiting.state == TrialState.WAITING
    assert waiting.user_attrs == {"retry_of": 0, "overrides": {"fake.batch_size": 4}}
    # The retry runs next, with the same params and half the batch.
    retry = searcher.suggest("b")
    assert retry == {"trial_number": 1, "params": first["params"],
                     "overrides": {"fake.batch_size": 4}, "baseline": False}
    assert stored(searcher, 1).user_attrs["config"]["fake"]["batch_size"] == 4
    assert stored(searcher, 1).user_attrs["trial_dir"] == str(paths.trial_dir(1))
    # A retry that runs out of memory again is not retried a second time.
    searcher.on_trial_complete("b", oom)
    assert stored(searcher, 1).state == TrialState.FAIL
    assert "retried_as" not in stored(searcher, 1).user_attrs
    assert searcher.suggest("c")["trial_number"] == 2
    assert "retry_of" not in stored(searcher, 2).user_attrs


def test_out_of_memory_without_retry_on_oom_is_not_retried(tmp_path: Path) -> None:
    searcher, _, _ = make_searcher(tmp_path, FAKE_SPACE)
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"step": 0, "eval_loss": math.nan, "outcome": "failed",
                                     "out_of_memory": True, "reason": "MemoryError: "})
    assert stored(searcher, 0).state == TrialState.FAIL
    assert "retried_as" not in stored(searcher, 0).user_attrs
    assert len(searcher.study.trials) == 1


def test_a_grid_tries_each_point_once_counting_the_baseline_and_then_finishes(
        tmp_path: Path) -> None:
    raw = FAKE_SPACE.read_text().replace("name: random", "name: grid").replace(
        "{type: float, low: 0.001, high: 0.1, log: true}",
        "{type: categorical, choices: [0.01, 0.001]}")
    space_file = tmp_path / "fake_grid.yaml"
    space_file.write_text(raw)
    space = load_space(str(space_file))
    searcher, _, _ = make_searcher(tmp_path, space_file, n_trials=3,
                                   sampler=build_sampler(space))
    searcher.study.enqueue_trial(space.baseline_params(), user_attrs={"baseline": True})
    for number, ray_id in enumerate("ab"):
        config = searcher.suggest(ray_id)
        assert config["trial_number"] == number
        searcher.on_trial_complete(ray_id, complete_report(1.0 + number))
    # Two points, the baseline's among them: done after two trials, though 3 were asked for,
    # and no point left waiting.
    assert searcher.suggest("c") == Searcher.FINISHED
    trials = searcher.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.params["fake.learning_rate"] for t in trials] == \
        [space.baseline_params()["fake.learning_rate"], 0.001]
