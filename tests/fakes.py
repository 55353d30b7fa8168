"""Test fakes: a reporter that keeps what it is given, and a torch-free objective that
completes, prunes, reports NaN, raises or runs out of memory on request.

The fake objective trains nothing: its "loss" after step s is ``(lr - 0.01)**2 + 1 / s``, so a
sampler that finds lr near 0.01 wins, and its steps take ``step_seconds`` each. Its config:

    fake:
      learning_rate: 0.01    # searched
      max_steps: 30
      eval_steps: 10
      behaviour: complete    # or: prune, nan, raise, oom (oom only above batch_size 4)
      batch_size: 8
      step_seconds: 0.0
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from objectives import register
from objectives.base import (
    DataError,
    Metric,
    Objective,
    Reporter,
    TrialContext,
    write_predictions,
)

FAKE = "fake"


class Recorder(Reporter):
    """Keeps every report, in order."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def report(self, metrics: dict) -> None:
        self.results.append(metrics)


class OutOfMemoryError(RuntimeError):
    """Named as torch.cuda's, which is how the search recognises running out of memory."""


class FakeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(0.01, gt=0)
    max_steps: int = Field(30, gt=0)
    eval_steps: int = Field(10, gt=0)
    behaviour: Literal["complete", "prune", "nan", "raise", "oom"] = "complete"
    batch_size: int = Field(8, gt=0)
    step_seconds: float = Field(0.0, ge=0)
    # Up to this many seconds more per evaluation, drawn afresh in every run: which of two
    # concurrent trials ends first then differs from run to run.
    jitter_seconds: float = Field(0.0, ge=0)
    data: str | None = None


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fake: FakeSection = Field(default_factory=FakeSection)
    path_fields: ClassVar[dict[str, list[str]]] = {"fake": ["data"]}


def loss(config: FakeSection, step: int) -> float:
    return (config.learning_rate - 0.01) ** 2 * 1e4 + 1.0 / step


class FakeObjective(Objective):
    name = FAKE
    config_model = FakeConfig
    path_fields = FakeConfig.path_fields
    metrics = (Metric("eval_loss", "minimize"),
               Metric("eval_accuracy", "maximize", per_example=True))

    def max_steps(self, config: FakeConfig) -> int:
        return config.fake.max_steps

    def check(self, config: FakeConfig) -> None:
        if config.fake.learning_rate > 1:
            raise DataError("fake.learning_rate", "above 1 diverges")

    def check_data(self, config: FakeConfig) -> None:
        if config.fake.data is not None and not Path(config.fake.data).is_file():
            raise DataError("fake.data", "dataset file not found", source=config.fake.data)

    def oom_retry(self, config: FakeConfig) -> dict[str, Any] | None:
        batch = config.fake.batch_size
        return {"fake.batch_size": batch // 2} if batch > 1 else None

    def run(self, config: FakeConfig, context: TrialContext) -> None:
        fake = config.fake
        if fake.behaviour == "raise":
            raise ValueError("the fake objective was asked to raise")
        if fake.behaviour == "oom" and fake.batch_size > 4:
            raise OutOfMemoryError("CUDA out of memory (fake)")
        step = 0
        for step in range(fake.eval_steps, fake.max_steps + 1, fake.eval_steps):
            time.sleep(fake.step_seconds * fake.eval_steps
                       + random.SystemRandom().uniform(0, fake.jitter_seconds))
            value = math.nan if fake.behaviour == "nan" else loss(fake, step)
            context.report({"step": step, "eval_loss": value, "eval_accuracy": 1 / (1 + value),
                            "last_evaluation": step + fake.eval_steps > fake.max_steps})
            if fake.behaviour == "prune":
                context.prune("the fake objective was asked to stop", step=step)
                return
        final = loss(fake, step)
        # A test split of ten examples, the first k answered right, k growing with accuracy.
        right = round(10 / (1 + final))
        rows = [{"prompt": f"q{i}", "reference": "yes", "prediction": "yes" if i < right
                 else "no"} for i in range(10)]
        write_predictions(context.trial_dir, "test", rows)
        (context.trial_dir / "labels.json").write_text(json.dumps(["no", "yes"]))
        (context.trial_dir / "weights.json").write_text(json.dumps(config.model_dump()))
        value = final if context.metric == "eval_loss" else 1 / (1 + final)
        context.complete(value if fake.behaviour != "nan" else math.nan, step=step,
                         test_loss=final, test_accuracy=right / 10,
                         attrs={"test_confusion_matrix": [[0, 0], [10 - right, right]]})

    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        best_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(trial_dir / "weights.json", best_dir / "weights.json")

    def score(self, metric: str, rows: list[dict[str, str]], labels: list[str] | None) -> float:
        if metric != "accuracy":
            raise KeyError(metric)
        return sum(r["prediction"] == r["reference"] for r in rows) / len(rows)


def register_fake() -> None:
    """Make ``objective: fake`` in a space mean FakeObjective (in this process and in Ray
    workers, which import this module to unpickle the trainable's space)."""
    register(FAKE, "tests.fakes:FakeObjective")
