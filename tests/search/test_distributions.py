"""The search section as Optuna sees it."""

from __future__ import annotations

import optuna
import pytest
from pydantic import TypeAdapter

from search.distributions import DefineByRun, centre, grid, nearest
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


def test_the_centre_of_a_range_is_its_middle_on_its_scale_and_step() -> None:
    params = search({
        "rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.1},
        "layers": {"type": "int", "low": 2, "high": 8},
        "steps": {"type": "int", "low": 10, "high": 90, "step": 20},
        "r": {"type": "categorical", "choices": [4, 8, 16]},
    })
    # sqrt(1e-4 * 3e-2) = sqrt(3e-6); (0 + 0.4) / 2; (2 + 8) / 2; (10 + 90) / 2, on the
    # steps 10, 30, 50, 70, 90; choices have no middle.
    assert centre(params["rate"]) == pytest.approx(1.7320508e-3)
    assert centre(params["dropout"]) == pytest.approx(0.2)
    assert centre(params["layers"]) == 5 and isinstance(centre(params["layers"]), int)
    assert centre(params["steps"]) == 50
    assert centre(params["r"]) is None


def test_the_nearest_value_a_parameter_holds() -> None:
    params = search({
        "rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "r": {"type": "categorical", "choices": [4, 8, 16]},
        "name": {"type": "categorical", "choices": ["a", "b"]},
        "layers": {"type": "int", "low": 2, "high": 8, "step": 3},
    })
    assert nearest(params["rate"], 5.0) == 0.1  # clipped to the range
    assert nearest(params["rate"], 0.02) == 0.02
    assert nearest(params["r"], 16) == 16
    # 12 is 4 from both 8 and 16, but 1.33 x from 16 against 1.5 x from 8.
    assert nearest(params["r"], 12) == 16
    assert nearest(params["r"], 10) == 8
    assert nearest(params["r"], "16") is None  # nothing comparable
    assert nearest(params["name"], "b") == "b"
    assert nearest(params["name"], "c") is None
    assert nearest(params["layers"], 7) == 8  # on 2, 5, 8
    assert nearest(params["layers"], 100) == 8
