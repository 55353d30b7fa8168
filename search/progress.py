"""Progress in the terminal: a line each time a trial starts or ends, and on a terminal a live
status line under them (trials finished, best so far and its parameters, time left)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from optuna.trial import TrialState
from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from search.outcome import outcome

LABELS = {
    TrialState.COMPLETE: "done",
    TrialState.PRUNED: "stopped early",
    TrialState.FAIL: "failed",
}


class Progress(Callback):
    """Counts trials as Ray reports them; ``quiet`` prints only failures."""

    def __init__(self, total: int, metric: str, minimize: bool, already: int = 0,
                 quiet: bool = False, console: Console | None = None,
                 others: Sequence[str] = ()) -> None:
        """``others``: the further objectives of a multi-objective study, shown with each
        finished trial; no single best trial is shown then."""
        self.total, self.metric, self.minimize = total, metric, minimize
        self.others = list(others)
        self.already, self.quiet = already, quiet
        self.console = console or Console(file=sys.stdout, highlight=False)
        self.counts: Counter[TrialState] = Counter()
        self.running = 0
        self.best: tuple[float, int, dict[str, Any]] | None = None
        self.start = time.monotonic()
        self.live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ray saves its callbacks with the experiment; a console and a live view stay here.
        return {**self.__dict__, "console": None, "live": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console(file=sys.stdout, highlight=False)

    # -- what is shown -------------------------------------------------------------------
    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        done_here = sum(self.counts.values())
        finished = self.already + done_here
        tallies = ", ".join(f"{self.counts[s]} {label}" for s, label in LABELS.items())
        line = (f"{finished}/{self.total} finished ({tallies}), {self.running} running | "
                f"{_duration(elapsed)} elapsed")
        if done_here:
            # Trials so far took elapsed/done_here each, with the same concurrency ahead.
            left = (self.total - finished) * elapsed / done_here
            line += f", ~{_duration(left)} left"
        if self.best:
            value, number, params = self.best
            shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in params.items())
            line += f" | best {value:.4f} (trial {number}: {shown})"
        return line

    def _event(self, text: str, important: bool = False) -> None:
        if self.quiet and not important:
            return
        stamp = f"[{_duration(time.monotonic() - self.start):>7}]"
        if self.live is not None:
            self.live.console.print(f"{stamp} {text}", markup=False)
            self.live.update(Text(self.status(), style="bold"))
        else:
            self.console.print(f"{stamp} {text} | {self.status()}", markup=False,
                               soft_wrap=True)

    # -- Ray Tune callback hooks ---------------------------------------------------------
    def setup(self, **info) -> None:
        if self.console.is_terminal and not self.quiet:
            self.live = Live(Text(self.status()), console=self.console, auto_refresh=True,
                             refresh_per_second=1, transient=True)
            self.live.start()

    def on_experiment_end(self, trials: list, **info) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self.running += 1
        self._event(f"trial {trial.config['trial_number']} started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._ended(trial, error=True)

    def _ended(self, trial: Any, error: bool) -> None:
        number = trial.config["trial_number"]
        ended = outcome(trial.last_result, error, self.metric, self.others)
        self.running -= 1
        self.counts[ended.state] += 1
        if ended.value is not None and not self.others \
                and (self.best is None or self._better(ended.value)):
            self.best = (ended.value, number, trial.config["params"])
        detail = (", ".join(f"{name} {value:.4f}" for name, value in
                            zip([self.metric, *self.others], ended.values, strict=True))
                  if ended.values else ended.reason)
        self._event(f"trial {number} {LABELS[ended.state]}: {detail}",
                    important=ended.state == TrialState.FAIL)

    def _better(self, value: float) -> bool:
        return value < self.best[0] if self.minimize else value > self.best[0]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
