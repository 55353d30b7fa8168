"""The map from how a Ray trial ended to its Optuna state, case by case."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState

from search.outcome import ERROR_FILE, outcome


def test_finished_trial_is_complete_with_its_value(tmp_path: Path) -> None:
    ended = outcome({"step": 30, "eval_loss": 0.5, "outcome": "complete"}, False, "eval_loss",
                    tmp_path)
    assert (ended.state, ended.value) == (TrialState.COMPLETE, 0.5)


def test_trial_stopped_by_the_scheduler_is_pruned_not_complete(tmp_path: Path) -> None:
    ended = outcome({"step": 10, "eval_loss": 3.0}, False, "eval_loss", tmp_path)
    assert ended.state == TrialState.PRUNED
    assert ended.reason == "stopped early by the scheduler at step 10"


def test_trial_that_pruned_itself_keeps_its_reason(tmp_path: Path) -> None:
    result = {"step": 7, "eval_loss": float("nan"), "outcome": "pruned",
              "reason": "training loss became nan at step 7"}
    ended = outcome(result, False, "eval_loss", tmp_path)
    assert (ended.state, ended.reason) == (TrialState.PRUNED, result["reason"])


def test_complete_with_a_non_finite_value_is_pruned(tmp_path: Path) -> None:
    ended = outcome({"step": 5, "eval_loss": float("inf"), "outcome": "complete"}, False,
                    "eval_loss", tmp_path)
    assert ended.state == TrialState.PRUNED and "inf" in ended.reason


def test_error_is_fail_with_the_summary_the_trial_wrote(tmp_path: Path) -> None:
    (tmp_path / ERROR_FILE).write_text("ValueError: bad thing\n")
    ended = outcome(None, True, "eval_loss", tmp_path)
    assert (ended.state, ended.reason) == (TrialState.FAIL, "ValueError: bad thing")


def test_error_without_a_summary_blames_the_worker(tmp_path: Path) -> None:
    ended = outcome({"step": 10, "eval_loss": 1.0}, True, "eval_loss", tmp_path)
    assert (ended.state, ended.reason) == (TrialState.FAIL, "the trial's worker failed")


def test_trial_that_never_evaluated_is_fail(tmp_path: Path) -> None:
    assert outcome(None, False, "eval_loss", tmp_path).state == TrialState.FAIL
    assert outcome({"step": 3}, False, "eval_loss", tmp_path).state == TrialState.FAIL
