"""The function Ray Tune runs for each trial: resolve the config, run the objective."""

from __future__ import annotations

import json
import math
import os
import traceback
from typing import Any

import ray
import yaml
from ray import tune

from objectives.base import Reporter, TrialContext
from search.outcome import ERROR_FILE
from search.schedulers import BASELINE, decision_steps
from search.space import SearchSpace
from search.storage import StudyPaths


class TuneReporter(Reporter):
    def report(self, metrics: dict[str, Any]) -> None:
        tune.report(metrics)


def error_summary(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"[:500]


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (known by name: the search itself needs no torch), or the
    host's MemoryError."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"


def run_trial(config: dict[str, Any], space: SearchSpace, paths: StudyPaths) -> None:
    """One trial: its folder holds the resolved config, its metrics, checkpoints and adapter.

    A trial that raises ends with a last report saying "failed" (and its traceback in
    error.txt), rather than raising into Ray: Ray's restarts are kept for workers that die,
    which resume from their checkpoints; an error in the code would only happen again.
    """
    number = config["trial_number"]
    trial_dir = paths.trial_dir(number)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / ERROR_FILE).unlink(missing_ok=True)  # a restarted trial starts clean
    (trial_dir / "worker.json").write_text(json.dumps(
        {"pid": os.getpid(), "node_ip": ray.util.get_node_ip_address()}), encoding="utf-8")
    study = space.head.study
    context = TrialContext(
        number=number, trial_dir=trial_dir, prepared_dir=paths.prepared,
        reporter=TuneReporter(), metric=study.metric, direction=study.direction,
        other_metrics=tuple(study.metrics[1:]),
        threads=max(1, math.floor(space.head.resources.cpu)),
        baseline=bool(config.get(BASELINE)), decision_steps=decision_steps(space),
    )
    try:
        trial_config = space.trial_config({**config["params"], **config.get("overrides", {})})
        resolved = {"trial": number, "params": config["params"],
                    "overrides": config.get("overrides", {}),
                    **trial_config.model_dump(mode="json")}
        (trial_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False),
                                               encoding="utf-8")
        space.objective.run(trial_config, context)
    except Exception as error:
        (trial_dir / ERROR_FILE).write_text(traceback.format_exc(), encoding="utf-8")
        context.fail(error_summary(error), out_of_memory=is_out_of_memory(error))
