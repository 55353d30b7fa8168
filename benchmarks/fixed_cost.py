"""An objective that costs a fixed time: what remains of a search's wall time is the service's.

Registered at run time by benchmarks/overhead.py:
``objectives.OBJECTIVES["fixed_cost"] = "benchmarks.fixed_cost:FixedCost"``.
Its six parameters mirror the kinds of the default space's (a log-scale float, an int and four
categoricals), so the sampler does the same work as in a real search.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from objectives.base import Metric, Objective, TrialContext


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CostSection(_Section):
    seconds: float = Field(3.0, gt=0, description="Sleep per trial, one report a second.")


class ParamsSection(_Section):
    learning_rate: float = 1e-3
    batch_size: int = 8
    accumulation: int = 1
    rank: int = 8
    alpha: int = 16
    heads: int = 4


class FixedCostConfig(_Section):
    cost: CostSection = Field(default_factory=CostSection)
    params: ParamsSection = Field(default_factory=ParamsSection)


def loss(params: ParamsSection) -> float:
    """A smooth deterministic function with its minimum inside the space."""
    return (1.0 + (math.log10(params.learning_rate) + 3.0) ** 2
            + 0.1 * abs(math.log2(params.batch_size / 8)) + 0.05 * (params.accumulation - 1)
            + 0.1 * abs(math.log2(params.rank / 8)) + 0.1 * abs(math.log2(params.alpha / 16))
            + 0.05 * abs(math.log2(params.heads / 4)))


class FixedCost(Objective):
    name = "fixed_cost"
    config_model: ClassVar[type[BaseModel]] = FixedCostConfig
    metrics = (Metric("eval_loss", "minimize"),)

    def run(self, config: FixedCostConfig, context: TrialContext) -> None:
        value = loss(config.params)
        seconds = config.cost.seconds
        steps = math.ceil(seconds)
        for step in range(1, steps + 1):
            # Whole seconds, then the rest: the reports' own cost adds to the sleep, as a real
            # objective's would.
            time.sleep(min(1.0, seconds - (step - 1)))
            context.report({"step": step, "eval_loss": value + 1.0 / step})
        context.complete(value + 1.0 / steps, step=steps)

    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        best_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(trial_dir / "config.yaml", best_dir / "config.yaml")
