"""The search section as Optuna sees it: a define-by-run function and plain distributions."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna

from search.space import CategoricalParam, FloatParam, IntParam, Param, is_active


def suggest(trial: optuna.Trial, key: str, param: Param) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(key, param.low, param.high, step=param.step, log=param.log)
    return trial.suggest_categorical(key, param.choices)


class DefineByRun:
    """Suggests each parameter in file order, skipping those whose ``when`` does not hold.

    A class rather than a closure so Ray can pickle the searcher that holds it.
    """

    def __init__(self, search: dict[str, Param]) -> None:
        self.search = search

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, Any] = {}
        for key, param in self.search.items():
            if is_active(param, chosen):
                chosen[key] = suggest(trial, key, param)


def grid_points(search: dict[str, Param]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in file order (the last key varies fastest)."""
    values = grid(search)
    return [dict(zip(values, point, strict=True)) for point in itertools.product(*values.values())]


def grid(search: dict[str, Param]) -> dict[str, list[Any]]:
    """Every value of every parameter, for the grid sampler; floats need a step."""
    values: dict[str, list[Any]] = {}
    for key, param in search.items():
        if isinstance(param, CategoricalParam):
            values[key] = list(param.choices)
        elif isinstance(param, IntParam):
            values[key] = list(range(param.low, param.high + 1, param.step))
        elif param.step is not None:
            count = round((param.high - param.low) / param.step) + 1
            values[key] = [float(v) for v in np.linspace(param.low, param.high, count)]
        else:
            raise ValueError(f"search.{key}: the grid sampler needs choices or a step")
    return values


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution ``suggest`` samples ``param`` from."""
    if isinstance(param, FloatParam):
        return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log,
                                                      step=param.step)
    if isinstance(param, IntParam):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log,
                                                    step=param.step)
    return optuna.distributions.CategoricalDistribution(param.choices)


def holds(param: Param, value: Any) -> bool:
    """Whether ``param`` could have suggested ``value``."""
    if isinstance(param, CategoricalParam):
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not param.low <= value <= param.high:
        return False
    step = param.step
    if isinstance(param, IntParam):
        return float(value).is_integer() and (int(value) - param.low) % step == 0
    return step is None or abs((value - param.low) / step - round((value - param.low) / step)) \
        < 1e-9


def centre(param: Param) -> Any:
    """The middle of a numeric range (geometric on a log range), on its step; None for
    choices, which have no middle."""
    if isinstance(param, CategoricalParam):
        return None
    middle = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    return nearest(param, middle)


def nearest(param: Param, value: Any) -> Any:
    """The value ``param`` could suggest that lies nearest ``value`` (on the log scale between
    positive numbers); None if it holds nothing comparable."""
    if isinstance(param, CategoricalParam):
        if value in param.choices:
            return value
        numbers = [c for c in param.choices if _is_number(c)]
        if not numbers or not _is_number(value):
            return None
        scaled = math.log if value > 0 and all(c > 0 for c in numbers) else float
        return min(numbers, key=lambda c: abs(scaled(c) - scaled(value)))
    if not _is_number(value):
        return None
    value = min(max(value, param.low), param.high)
    if param.step is not None:
        value = min(param.low + round((value - param.low) / param.step) * param.step, param.high)
    return int(value) if isinstance(param, IntParam) else float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
