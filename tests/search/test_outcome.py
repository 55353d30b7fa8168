"""The map from how a Ray trial ended to its Optuna state, case by case."""

from __future__ import annotations

from optuna.trial import TrialState

from search.outcome import outcome


def test_finished_trial_is_complete_with_its_value() -> None:
    ended = outcome({"step": 30, "eval_loss": 0.5, "outcome": "complete"}, False, "eval_loss")
    assert (ended.state, ended.value) == (TrialState.COMPLETE, 0.5)


def test_trial_stopped_by_the_scheduler_is_pruned_not_complete() -> None:
    ended = outcome({"step": 10, "eval_loss": 3.0}, False, "eval_loss")
    assert ended.state == TrialState.PRUNED
    assert ended.reason == "stopped early by the scheduler at step 10"


def test_trial_that_pruned_itself_keeps_its_reason() -> None:
    result = {"step": 7, "eval_loss": float("nan"), "outcome": "pruned",
              "reason": "training loss became nan at step 7"}
    ended = outcome(result, False, "eval_loss")
    assert (ended.state, ended.reason) == (TrialState.PRUNED, result["reason"])


def test_complete_with_a_non_finite_value_is_pruned() -> None:
    ended = outcome({"step": 5, "eval_loss": float("inf"), "outcome": "complete"}, False,
                    "eval_loss")
    assert ended.state == TrialState.PRUNED and "inf" in ended.reason


def test_trial_that_raised_is_fail_with_its_summary() -> None:
    result = {"step": 0, "eval_loss": float("nan"), "outcome": "failed",
              "reason": "ValueError: bad thing", "out_of_memory": False}
    ended = outcome(result, False, "eval_loss")
    assert (ended.state, ended.reason, ended.out_of_memory) == \
        (TrialState.FAIL, "ValueError: bad thing", False)
    # Even if the scheduler stopped it on that last report.
    assert outcome(result, True, "eval_loss").reason == "ValueError: bad thing"


def test_out_of_memory_is_flagged_for_a_retry() -> None:
    result = {"step": 20, "eval_loss": float("nan"), "outcome": "failed",
              "reason": "OutOfMemoryError: CUDA out of memory", "out_of_memory": True}
    assert outcome(result, False, "eval_loss").out_of_memory


def test_worker_that_died_for_good_is_fail() -> None:
    ended = outcome({"step": 10, "eval_loss": 1.0}, True, "eval_loss")
    assert ended.state == TrialState.FAIL and "worker died" in ended.reason


def test_trial_that_never_evaluated_is_fail() -> None:
    assert outcome(None, False, "eval_loss").state == TrialState.FAIL
    assert outcome({"step": 3}, False, "eval_loss").state == TrialState.FAIL
