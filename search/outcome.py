"""The one map from how a Ray Tune trial ended to the state of its Optuna trial."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from objectives.base import finite

ERROR_FILE = "error.txt"  # a trial that raises writes its one-line summary here


@dataclass(frozen=True)
class Outcome:
    state: TrialState
    value: float | None = None
    reason: str | None = None


def outcome(result: dict[str, Any] | None, error: bool, metric: str, trial_dir: Path) -> Outcome:
    """How the trial ends in the study.

    - raised: FAIL, with the error summary the trial wrote;
    - last report says "complete" with a finite value: COMPLETE with that value;
    - last report says "pruned" (e.g. non-finite loss): PRUNED with its reason;
    - reports but no last one: the scheduler stopped it, PRUNED;
    - no report at all: FAIL, it never evaluated.
    """
    if error:
        summary = trial_dir / ERROR_FILE
        reason = summary.read_text(encoding="utf-8").strip() if summary.is_file() else None
        return Outcome(TrialState.FAIL, reason=reason or "the trial's worker failed")
    if not result or metric not in result:
        return Outcome(TrialState.FAIL, reason="stopped before its first evaluation")
    kind, value = result.get("outcome"), result[metric]
    if kind == "complete" and finite(value):
        return Outcome(TrialState.COMPLETE, value=float(value))
    if kind == "complete":
        return Outcome(TrialState.PRUNED, reason=f"final {metric} is {value}")
    if kind == "pruned":
        return Outcome(TrialState.PRUNED, reason=result.get("reason", "stopped itself"))
    return Outcome(TrialState.PRUNED,
                   reason=f"stopped early by the scheduler at step {result.get('step')}")
