"""Unusual but reasonable input, tried as a new user would: each case stands for a mechanism.

Searches use the torch-free fake objective (tests/fakes.py) under real Ray and a real study,
so each takes seconds; property-based cases (hypothesis) generate spaces and mutations.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

import launcher
from search.runner import SearchRequest, open_study
from search.space import load_space
from search.storage import StudyPaths, default_url
from tests.conftest import load
from tests.fakes import register_fake

LEFT_OVER = (TrialState.RUNNING, TrialState.WAITING)


def fake_space(folder: Path, name: str = "fake", **sections: Any) -> Path:
    """A fake-objective space: 30 steps evaluated every 10, ASHA from step 10."""
    raw: dict[str, Any] = {
        "objective": "fake",
        "study": {"n_trials": 4, "max_concurrent_trials": 1, "seed": 0},
        "sampler": {"name": "random"},
        "scheduler": {"name": "asha", "grace_period": 10, "reduction_factor": 3},
        "fake": {"learning_rate": 0.01, "max_steps": 30, "eval_steps": 10},
        "search": {"fake.learning_rate": {"type": "float", "low": 0.001, "high": 0.1,
                                          "log": True}},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key != "search" \
            else value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def launch(*argv: str) -> tuple[int, str, str]:
    """The launcher's exit code, stdout and stderr; stderr with the warnings it would print
    there as a command (here pytest would collect them instead)."""
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          warnings.catch_warnings(record=True) as caught):
        code = launcher.main(list(argv))
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                    for w in caught)
    return code, out.getvalue(), err.getvalue() + shown


@pytest.fixture(autouse=True)
def _fake(local_ray) -> None:
    register_fake()


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.trials]


def test_a_trial_that_trains_to_its_last_step_is_complete_when_a_rung_falls_there(
        tmp_path: Path, studies_dir: Path) -> None:
    # 30 steps, rungs at 10 and 30 (grace 10, factor 3): ASHA's last rung is the last step.
    space = fake_space(tmp_path, study={"n_trials": 8}, sampler={"name": "random"})
    assert launch("--space", str(space))[0] == 0
    study = load(studies_dir, "fake")
    for trial in study.trials:
        if max(trial.intermediate_values, default=0) == 30:
            assert trial.state == TrialState.COMPLETE, (trial.number, trial.user_attrs)
    assert TrialState.PRUNED in states(study)  # the rung at step 10 still stops trials


def test_a_time_budget_stops_starting_trials_and_leaves_none_running(
        tmp_path: Path, studies_dir: Path) -> None:
    # Each trial takes 1.5 s; the budget ends during the first: it finishes, none follows.
    space = fake_space(tmp_path, study={"n_trials": 10, "time_budget_s": 0.5},
                       fake={"step_seconds": 0.05})
    code, out, err = launch("--space", str(space))
    assert (code, err) == (0, "")
    study = load(studies_dir, "fake")
    assert states(study) == [TrialState.COMPLETE]
    assert study.trials[0].user_attrs["baseline"] is True
    assert "1 complete, 0 stopped early, 0 failed" in out
    # Resuming runs more trials under a new budget; still nothing left over.
    assert launch("--space", str(space), "--resume")[0] == 0
    study = load(studies_dir, "fake")
    assert len(study.trials) == 2 and not set(states(study)) & set(LEFT_OVER)


def test_a_grid_tries_each_point_once_with_the_baseline_counted(
        tmp_path: Path, studies_dir: Path) -> None:
    space = fake_space(tmp_path, study={"n_trials": 10}, sampler={"name": "grid"},
                       scheduler={"name": "none"}, search={
                           "fake.learning_rate": {"type": "categorical", "choices": [0.01, 0.1]},
                           "fake.batch_size": {"type": "categorical", "choices": [8, 4]}})
    assert launch("--space", str(space))[0] == 0
    study = load(studies_dir, "fake")
    points = [(t.params["fake.learning_rate"], t.params["fake.batch_size"]) for t in study.trials]
    # Four points, each once; the untuned default's point (0.01, 8) first.
    assert points[0] == (0.01, 8) and sorted(points) == [(0.01, 4), (0.01, 8), (0.1, 4), (0.1, 8)]
    assert set(states(study)) == {TrialState.COMPLETE}


def test_a_resumed_seeded_search_does_not_replay_its_trials(
        tmp_path: Path, studies_dir: Path) -> None:
    space = fake_space(tmp_path, study={"n_trials": 3, "seed": 5}, scheduler={"name": "none"})
    assert launch("--space", str(space))[0] == 0
    assert launch("--space", str(space), "--resume", "--trials", "6")[0] == 0
    rates = [t.params["fake.learning_rate"] for t in load(studies_dir, "fake").trials]
    assert len(rates) == 6 and len(set(rates)) == 6


def test_resuming_a_study_that_does_not_exist_is_an_error(
        tmp_path: Path, studies_dir: Path) -> None:
    code, _, err = launch("--space", str(fake_space(tmp_path)), "--study", "x", "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "no study 'x' to resume" in err and "drop --resume to start it" in err
    assert not (studies_dir / "x").exists()


def test_a_study_no_trial_of_which_finished_is_replaced_by_a_changed_space(
        tmp_path: Path, studies_dir: Path) -> None:
    first = load_space(str(fake_space(tmp_path / "a")))
    paths = StudyPaths.for_study("fake")
    paths.root.mkdir(parents=True)
    # As a launcher that died before its first trial ended leaves it: a WAITING baseline.
    study, _, _ = open_study(SearchRequest(first, "fake", 4), default_url(paths))
    study.set_user_attr("space_fingerprint", first.fingerprint())
    study.enqueue_trial({"fake.learning_rate": 0.01}, user_attrs={"baseline": True})
    changed = fake_space(tmp_path / "b", fake={"max_steps": 20})
    code, out, err = launch("--space", str(changed))
    assert (code, err) == (0, "")
    assert "replacing study 'fake'" in out
    assert set(states(load(studies_dir, "fake"))) <= {TrialState.COMPLETE, TrialState.PRUNED}


def test_valid_spaces_keep_stderr_clean(tmp_path: Path, studies_dir: Path) -> None:
    # An experimental sampler (QMC), and an untuned value outside the searched range.
    space = fake_space(tmp_path, sampler={"name": "qmc"}, fake={"learning_rate": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every warning, also one an earlier test showed
        code, _, err = launch("--space", str(space))  # err holds the warnings too
    assert (code, err) == (0, "")


# --- generated spaces --------------------------------------------------------------------

SAMPLERS = st.sampled_from(["tpe", "random", "qmc", "cmaes", "nsga2"])
SCHEDULERS = st.sampled_from(["asha", "median", "none"])


@st.composite
def valid_spaces(draw: st.DrawFn) -> dict[str, Any]:
    eval_steps = draw(st.sampled_from([5, 10]))
    max_steps = eval_steps * draw(st.integers(2, 4))
    low = draw(st.sampled_from([0.001, 0.005]))
    return {
        "study": {"n_trials": draw(st.integers(1, 3)),
                  "max_concurrent_trials": draw(st.integers(1, 2)),
                  "seed": draw(st.integers(0, 99))},
        "sampler": {"name": draw(SAMPLERS)},
        "scheduler": {"name": draw(SCHEDULERS), "grace_period": eval_steps,
                      "reduction_factor": draw(st.sampled_from([2, 3]))},
        "fake": {"max_steps": max_steps, "eval_steps": eval_steps,
                 "learning_rate": draw(st.sampled_from([0.01, 0.2])),
                 "behaviour": draw(st.sampled_from(["complete", "complete", "nan", "raise"]))},
        "search": {"fake.learning_rate": {"type": "float", "low": low, "high": 0.1,
                                          "log": draw(st.booleans())}},
    }


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sections=valid_spaces())
def test_any_valid_space_ends_with_exit_0_and_nothing_left_running(
        tmp_path_factory: pytest.TempPathFactory, sections: dict[str, Any]) -> None:
    folder = tmp_path_factory.mktemp("valid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(folder / "studies"))
        code, _, err = launch("--space", str(fake_space(folder, **sections)))
    assert (code, err) == (0, "")
    study = load(folder / "studies", "fake")
    assert study.trials and not set(states(study)) & set(LEFT_OVER)


MUTATIONS = st.sampled_from([
    ("study", "n_trials", "many"),  # a type changed
    ("study", "n_trials", -1),
    ("fake", "max_steps", "thirty"),
    ("search", "fake.learning_rate", {"type": "float", "low": 0.1, "high": 0.001}),  # swapped
    ("search", "fake.learning_rte", {"type": "float", "low": 0.001, "high": 0.1}),  # misspelt
    ("scheduler", "grace_peroid", 10),
    ("sampler", "name", "annealing"),
    ("fake", "data", "no_such_file.jsonl"),  # a file removed
    ("study", "metric", "eval_los"),
    ("study", "direction", "sideways"),
])


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS, base=valid_spaces())
def test_any_broken_space_is_one_line_exit_2_and_changes_no_study(
        tmp_path_factory: pytest.TempPathFactory, mutation: tuple[str, str, Any],
        base: dict[str, Any]) -> None:
    folder = tmp_path_factory.mktemp("broken")
    section, key, value = mutation
    broken = {**base, section: {**base[section], key: value}}
    if section == "search":
        broken["search"] = {key: value}
    studies = folder / "studies"
    (studies / "kept").mkdir(parents=True)
    (studies / "kept" / "marker").write_text("x")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        code, out, err = launch("--space", str(fake_space(folder, **broken)))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert sorted(p.relative_to(studies) for p in studies.rglob("*")) == \
        [Path("kept"), Path("kept/marker")]


def test_a_search_for_accuracy_keeps_its_curves_and_prunes_on_them(
        tmp_path: Path, studies_dir: Path) -> None:
    space = fake_space(tmp_path, study={"n_trials": 8, "metric": "eval_accuracy",
                                        "direction": "maximize"})
    assert launch("--space", str(space))[0] == 0
    study = load(studies_dir, "fake")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    # The curves are accuracies (the fake objective's 1 / (1 + loss)), pruned at step 10, and
    # each pruned trial was below the best accuracy seen at that step.
    for trial in pruned:
        assert list(trial.intermediate_values) == [10]
        assert 0 < trial.intermediate_values[10] < 1
    best_at_10 = max(t.intermediate_values[10] for t in study.trials)
    assert all(t.intermediate_values[10] < best_at_10 for t in pruned)
    assert study.best_trial.value == max(t.value for t in complete)


def test_a_search_whose_untuned_default_failed_says_why_there_is_no_comparison(
        tmp_path: Path, studies_dir: Path) -> None:
    space = fake_space(tmp_path, study={"n_trials": 2}, sampler={"name": "grid"},
                       scheduler={"name": "none"}, fake={"behaviour": "raise"},
                       search={"fake.behaviour": {"type": "categorical",
                                                  "choices": ["raise", "complete"]}})
    code, out, err = launch("--space", str(space))
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == ("no comparison with the untuned default: trial 0 is FAIL, "
                                    "not COMPLETE")
    assert not (studies_dir / "fake" / "comparison.json").exists()
