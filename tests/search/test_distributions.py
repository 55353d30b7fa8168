"""The search section as Optuna sees it."""

from __future__ import annotations

import optuna
import pytest
from pydantic import TypeAdapter

from search.distributions import DefineByRun, grid
from search.space import Param

PARAMS = TypeAdapter(dict[str, Param])


def search(raw: dict) -> dict:
    return PARAMS.validate_python(raw)


def test_define_by_run_suggests_each_type_and_skips_inactive_conditions() -> None:
    space = search({
        "training.lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]},
        "training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2,
                                  "when": {"training.lr_scheduler_type": ["cosine"]}},
        "lora.r": {"type": "int", "low": 4, "high": 16, "step": 4},
        "training.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    })
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: DefineByRun(space)(t) or 0.0, n_trials=30)
    for trial in study.trials:
        cosine = trial.params["training.lr_scheduler_type"] == "cosine"
        # warmup_ratio exists exactly when its condition holds.
        assert ("training.warmup_ratio" in trial.params) == cosine
        assert trial.params["lora.r"] in {4, 8, 12, 16}
        assert 1e-5 <= trial.params["training.learning_rate"] <= 1e-2
    assert {t.params["training.lr_scheduler_type"] for t in study.trials} == {"linear", "cosine"}


def test_grid_lists_every_value_and_needs_a_step_for_floats() -> None:
    values = grid(search({
        "lora.r": {"type": "int", "low": 4, "high": 12, "step": 4},
        "lora.lora_dropout": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
        "lora.bias": {"type": "categorical", "choices": ["none", "all"]},
    }))
    assert values["lora.r"] == [4, 8, 12]
    assert values["lora.lora_dropout"] == pytest.approx([0.0, 0.05, 0.1])
    assert values["lora.bias"] == ["none", "all"]
    with pytest.raises(ValueError, match="grid sampler needs choices or a step"):
        grid(search({"x": {"type": "float", "low": 0.0, "high": 1.0}}))
