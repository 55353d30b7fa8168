"""The function Ray Tune runs for each trial: resolve the config, run the objective."""

from __future__ import annotations

import math
from typing import Any

import yaml
from ray import tune

from objectives.base import Reporter, TrialContext
from search.outcome import ERROR_FILE
from search.space import SearchSpace
from search.storage import StudyPaths


class TuneReporter(Reporter):
    def report(self, metrics: dict[str, Any]) -> None:
        tune.report(metrics)


def error_summary(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"[:500]


def run_trial(config: dict[str, Any], space: SearchSpace, paths: StudyPaths) -> None:
    """One trial: its folder holds the resolved config, its metrics, checkpoints and adapter.

    A trial that raises leaves its one-line error summary in the folder for the study.
    """
    number = config["trial_number"]
    trial_dir = paths.trial_dir(number)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / ERROR_FILE).unlink(missing_ok=True)  # a restarted trial starts clean
    try:
        trial_config = space.trial_config(config["params"])
        resolved = {"trial": number, "params": config["params"],
                    **trial_config.model_dump(mode="json")}
        (trial_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False),
                                               encoding="utf-8")
        context = TrialContext(
            number=number, trial_dir=trial_dir, prepared_dir=paths.prepared,
            reporter=TuneReporter(), threads=max(1, math.floor(space.head.resources.cpu)),
        )
        space.objective.run(trial_config, context)
    except Exception as error:
        (trial_dir / ERROR_FILE).write_text(error_summary(error) + "\n", encoding="utf-8")
        raise
