"""The one map from how a Ray Tune trial ended to the state of its Optuna trial."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from objectives.base import COMPLETE, FAILED, OUT_OF_MEMORY, OUTCOME, PRUNED, REASON, STEP, finite

ERROR_FILE = "error.txt"  # a trial that raises leaves its traceback here


@dataclass(frozen=True)
class Outcome:
    state: TrialState
    value: float | None = None  # the first objective's
    reason: str | None = None
    out_of_memory: bool = False
    values: list[float] = field(default_factory=list)  # every objective's, when COMPLETE


def outcome(result: dict[str, Any] | None, error: bool, metric: str,
            others: Sequence[str] = ()) -> Outcome:
    """How the trial ends in the study; ``others`` are the further objectives of a
    multi-objective study, which only a final report holds.

    - last report's outcome is COMPLETE with finite values: COMPLETE with those values (one
      it lacks: FAIL, naming it; a non-finite one: PRUNED);
    - PRUNED (it stopped itself, e.g. on a non-finite loss): PRUNED with its reason;
    - FAILED (the objective raised): FAIL with the error's summary;
    - any other outcome: FAIL, naming it;
    - reports but no last one: the scheduler stopped it, PRUNED;
    - Ray gave up on the worker (it died more often than allowed): FAIL;
    - no report at all: FAIL, it never evaluated.
    """
    kind = (result or {}).get(OUTCOME)
    if kind not in (None, COMPLETE, PRUNED, FAILED):
        return Outcome(TrialState.FAIL, reason=f"the trial ended with an unknown outcome {kind!r}")
    if kind == FAILED:
        return Outcome(TrialState.FAIL, reason=result.get(REASON),
                       out_of_memory=bool(result.get(OUT_OF_MEMORY)))
    if error:
        return Outcome(TrialState.FAIL, reason="the trial's worker died and could not be "
                       "restarted")
    if not result or metric not in result:
        return Outcome(TrialState.FAIL, reason="stopped before its first evaluation")
    value = result[metric]
    if kind == COMPLETE:
        missing = [name for name in others if name not in result]
        if missing:
            return Outcome(TrialState.FAIL, reason=f"its final report has no {missing[0]}")
        bad = next((name for name in (metric, *others) if not finite(result[name])), None)
        if bad is not None:
            return Outcome(TrialState.PRUNED, reason=f"final {bad} is {result[bad]}")
        return Outcome(TrialState.COMPLETE, value=float(value),
                       values=[float(result[name]) for name in (metric, *others)])
    if kind == PRUNED:
        return Outcome(TrialState.PRUNED, reason=result.get(REASON, "stopped itself"))
    return Outcome(TrialState.PRUNED,
                   reason=f"stopped early by the scheduler at step {result.get(STEP)}")
