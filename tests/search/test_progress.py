"""The terminal progress: counts, best so far with its parameters, quiet mode."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

from rich.console import Console

from search.progress import Progress


def trial(number: int, last_result: dict, params: dict | None = None) -> SimpleNamespace:
    # The two attributes of a Ray Tune trial that the progress reads.
    return SimpleNamespace(config={"trial_number": number, "params": params or {}},
                           last_result=last_result)


def progress(quiet: bool = False) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(total=4, metric="eval_loss", minimize=True, quiet=quiet,
                    console=Console(file=out, width=400)), out


def test_lines_count_outcomes_and_show_the_best_parameters() -> None:
    shown, out = progress()
    for number in range(3):
        shown.on_trial_start(0, [], trial(number, {}))
    shown.on_trial_complete(0, [], trial(0, {"step": 30, "eval_loss": 0.5, "outcome": "complete"},
                                         {"lora.r": 8, "training.learning_rate": 0.00123}))
    shown.on_trial_complete(0, [], trial(1, {"step": 10, "eval_loss": 3.0}))
    shown.on_trial_complete(0, [], trial(2, {"eval_loss": float("nan"), "outcome": "failed",
                                             "reason": "ValueError: boom"}))
    text = out.getvalue()
    assert "trial 1 stopped early: stopped early by the scheduler at step 10" in text
    assert "trial 2 failed: ValueError: boom" in text
    last = text.strip().splitlines()[-1]
    assert "3/4 finished (1 done, 1 stopped early, 1 failed), 0 running" in last
    assert "best 0.5000 (trial 0: r=8, learning_rate=0.00123)" in last
    assert "left" in last  # an estimate of the remaining time


def test_quiet_prints_only_failures_and_survives_pickling() -> None:
    shown, out = progress(quiet=True)
    shown.on_trial_start(0, [], trial(0, {}))
    shown.on_trial_complete(0, [], trial(0, {"step": 30, "eval_loss": 0.5, "outcome": "complete"}))
    assert out.getvalue() == ""
    shown.on_trial_complete(0, [], trial(1, {"eval_loss": float("nan"), "outcome": "failed",
                                             "reason": "OSError: disk full"}))
    assert "trial 1 failed: OSError: disk full" in out.getvalue()
    # Ray saves its callbacks with the experiment state.
    assert pickle.loads(pickle.dumps(shown)).counts == shown.counts
