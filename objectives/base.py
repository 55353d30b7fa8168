"""What the search knows about an objective: a config model, a preparation step and a run."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel


class Reporter(ABC):
    """Where a trial sends its evaluations: Ray Tune in a search, a list in a test."""

    @abstractmethod
    def report(self, metrics: dict[str, Any]) -> None:
        """One evaluation; ``metrics`` holds ``step`` and the metrics at that step."""


@dataclass
class TrialContext:
    """What a trial is given besides its config."""

    number: int
    trial_dir: Path
    prepared_dir: Path  # shared by every trial of the study, written by Objective.prepare
    reporter: Reporter
    threads: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)

    def report(self, metrics: dict[str, Any]) -> None:
        """Record an evaluation in the trial folder, then hand it to the reporter."""
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        self.history.append(clean)
        with (self.trial_dir / "metrics.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(clean, allow_nan=True) + "\n")
        self.reporter.report(clean)


class Objective(ABC):
    """One kind of training the search can tune.

    ``run`` reports evaluations through ``context.report``; its last report carries
    ``outcome``: "complete" (trained to its end or stopped by its own early stopping) or
    "pruned" (stopped itself, e.g. on a non-finite loss, with ``reason``). A trial stopped by the
    scheduler sends no last report.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def check(self, config: BaseModel) -> None:  # noqa: B027 - optional hook
        """Raise ValueError for a config that cannot work, before any trial runs."""

    def check_data(self, config: BaseModel) -> None:  # noqa: B027 - optional hook
        """Raise SpaceError for data that cannot be used (read once, before the search)."""

    def prepare(self, config: BaseModel, prepared_dir: Path) -> None:  # noqa: B027
        """Work shared by all trials (tokenising data), done once by the driver."""

    def oom_retry(self, config: BaseModel) -> dict[str, Any] | None:
        """Dotted-key overrides that run the same trial in less memory, or None if none do."""
        return None

    @abstractmethod
    def run(self, config: BaseModel, context: TrialContext) -> None:
        """Train and evaluate one trial."""

    @abstractmethod
    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        """Copy what a user needs of the winning trial (adapter, tokenizer) to ``best_dir``."""


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
