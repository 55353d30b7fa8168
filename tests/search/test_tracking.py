"""What trackers are sent: each finished trial once, its evaluations by step, and a tracker that
fails is one warning (the servers themselves: tests/e2e/test_tracking.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.history import WARM_START
from search.storage import StudyPaths
from search.tracking import Mirror, MlflowTracker, Tracker, TrialRecord, record

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class Listening(Tracker):
    name = "listening"

    def __init__(self, fail_on: int | None = None, has: set[int] | None = None) -> None:
        self.got: list[TrialRecord] = []
        self.fail_on, self.has, self.finished = fail_on, has or set(), None

    def start(self, study: optuna.Study) -> set[int]:
        return set(self.has)

    def trial(self, trial: TrialRecord) -> None:
        if trial.number == self.fail_on:
            raise ConnectionError("server gone\nsecond line")
        self.got.append(trial)

    def finish(self, best, artifacts) -> None:
        self.finished = (best, list(artifacts))


@pytest.fixture
def study(tmp_path: Path) -> tuple[optuna.Study, StudyPaths]:
    paths = StudyPaths(tmp_path / "s")
    study = optuna.create_study(study_name="s", direction="minimize")
    study.set_metric_names(["eval_loss"])
    lr = FloatDistribution(1e-4, 1e-1, log=True)
    study.add_trial(create_trial(value=0.5, params={"lr": 0.01}, distributions={"lr": lr},
                                 intermediate_values={10: 0.9, 20: 0.5},
                                 user_attrs={"baseline": True, "test_loss": 0.55,
                                             "heartbeat": 1.0e9, "trial_dir": "x"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.05},
                                 distributions={"lr": lr}, intermediate_values={10: 2.0},
                                 user_attrs={"prune_reason": "ASHA stopped it at step 10"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"lr": 0.09},
                                 distributions={"lr": lr}, user_attrs={"fail_reason": "boom"}))
    study.add_trial(create_trial(value=0.4, params={"lr": 0.02}, distributions={"lr": lr},
                                 user_attrs={WARM_START: "earlier:3"}))
    study.ask()  # still running: not sent
    return study, paths


def test_a_record_holds_every_evaluation_by_step_and_the_final_figures(study):
    study, paths = study
    folder = paths.trial_dir(0)
    folder.mkdir(parents=True)
    rows = [{"step": 10, "eval_loss": 0.9, "eval_accuracy": 0.2, "note": "x"},
            {"step": 10, "eval_loss": 0.8, "eval_accuracy": 0.3},  # a restarted trial's
            {"step": 20, "eval_loss": 0.5, "eval_accuracy": math.nan, "last_evaluation": True},
            {"step": 20, "eval_loss": 0.5, "outcome": "complete"}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = record(study, study.trials[0], paths)
    assert got.history == [(10, {"eval_loss": 0.8, "eval_accuracy": 0.3}),
                           (20, {"eval_loss": 0.5})]
    assert got.final == {"test_loss": 0.55, "eval_loss": 0.5}
    assert (got.state, got.baseline, got.params) == ("COMPLETE", True, {"lr": 0.01})
    # Without the trial folder (another node's), the study's learning curve.
    pruned = record(study, study.trials[1], paths)
    assert pruned.history == [(10, {"eval_loss": 2.0})]
    assert (pruned.state, pruned.reason, pruned.final) == \
        ("PRUNED", "ASHA stopped it at step 10", {})


def test_each_finished_trial_of_this_study_is_sent_once(study):
    study, paths = study
    tracker = Listening(has={1})
    mirror = Mirror([tracker], paths)
    mirror.start(study)
    mirror.sync(study)
    mirror.sync(study)
    assert [t.number for t in tracker.got] == [0, 2]  # 1 it had; 3 is an earlier study's
    assert tracker.got[1].reason == "boom"
    mirror.finish(study, 0, [paths.root / "missing.html"])
    assert tracker.finished == (0, [])


def test_a_failing_tracker_is_one_warning_and_is_left_alone(study, capsys):
    study, paths = study
    failing, other = Listening(fail_on=0), Listening()
    mirror = Mirror([failing, other], paths)
    mirror.start(study)
    mirror.sync(study)
    mirror.finish(study, None, [])
    assert failing.got == [] and failing.finished is None
    assert [t.number for t in other.got] == [0, 1, 2] and other.finished == (None, [])
    assert capsys.readouterr().err.splitlines() == [
        "warning: tracking: listening failed (ConnectionError: server gone); no more trials go "
        "there, the study keeps every result"]


def test_a_tracker_whose_package_is_missing_is_one_warning(study, monkeypatch, capsys):
    study, paths = study
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if not installed
    mirror = Mirror([MlflowTracker("http://127.0.0.1:9", None)], paths)
    mirror.start(study)
    mirror.sync(study)
    assert mirror.trackers == []
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: tracking: MLflow at http://127.0.0.1:9 failed "
                           "(ModuleNotFoundError: ")
