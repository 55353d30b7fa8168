"""The outcome strings of objectives/base.py as the search reads them, and an outcome it does
not know (test_outcome.py covers the known ones case by case)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from objectives import base
from search.outcome import outcome


def test_the_report_keys_and_outcomes_are_the_strings_the_search_reads() -> None:
    assert (base.STEP, base.OUTCOME, base.REASON) == ("step", "outcome", "reason")
    assert (base.COMPLETE, base.PRUNED, base.FAILED) == ("complete", "pruned", "failed")
    assert (base.OUT_OF_MEMORY, base.LAST_EVALUATION) == ("out_of_memory", "last_evaluation")
    states = {kind: outcome({base.STEP: 5, "eval_loss": 1.0, base.OUTCOME: kind,
                             base.REASON: "why"}, False, "eval_loss").state
              for kind in (base.COMPLETE, base.PRUNED, base.FAILED)}
    assert states == {base.COMPLETE: TrialState.COMPLETE, base.PRUNED: TrialState.PRUNED,
                      base.FAILED: TrialState.FAIL}


@pytest.mark.parametrize("kind", ["completed", "COMPLETE", "out_of_memory", "", 1])
@pytest.mark.parametrize("error", [False, True])
def test_an_unknown_outcome_is_fail_with_a_reason_naming_it(kind: object, error: bool) -> None:
    result = {base.STEP: 30, "eval_loss": 0.5, base.OUTCOME: kind, base.REASON: "ignored"}
    ended = outcome(result, error, "eval_loss")
    assert ended.state == TrialState.FAIL
    assert ended.reason == f"the trial ended with an unknown outcome {kind!r}"
    assert ended.value is None and ended.out_of_memory is False

