"""Progress in the terminal: one line each time a trial starts or ends."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from optuna.trial import TrialState
from ray.tune import Callback

from search.outcome import outcome

LABELS = {
    TrialState.COMPLETE: "done",
    TrialState.PRUNED: "stopped early",
    TrialState.FAIL: "failed",
}


class ProgressPrinter(Callback):
    def __init__(self, total: int, metric: str, minimize: bool, already: int = 0,
                 out=print) -> None:
        self.total, self.metric, self.minimize = total, metric, minimize
        self.already, self.out = already, out
        self.counts: Counter[TrialState] = Counter()
        self.running = 0
        self.best: tuple[float, int] | None = None
        self.start = time.monotonic()

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.start
        finished = self.already + sum(self.counts.values())
        tallies = " · ".join(f"{self.counts[s]} {label}" for s, label in LABELS.items())
        best = f"best {self.best[0]:.4f} (trial {self.best[1]})" if self.best else "best -"
        self.out(f"[{elapsed:6.0f}s] {text} | {finished}/{self.total} finished: {tallies}, "
                 f"{self.running} running | {best}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.running += 1
        self._line(f"trial {trial.config['trial_number']} started")

    def _ended(self, trial: Any, error: bool) -> None:
        number = trial.config["trial_number"]
        ended = outcome(trial.last_result, error, self.metric)
        self.running -= 1
        self.counts[ended.state] += 1
        if ended.value is not None:
            key = ended.value if self.minimize else -ended.value
            if self.best is None or key < (self.best[0] if self.minimize else -self.best[0]):
                self.best = (ended.value, number)
        detail = f"{self.metric} {ended.value:.4f}" if ended.value is not None else ended.reason
        self._line(f"trial {number} {LABELS[ended.state]}: {detail}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, error=True)
