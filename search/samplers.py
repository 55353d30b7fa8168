"""Optuna samplers by name, with their options from the space."""

from __future__ import annotations

import inspect
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning

from search.distributions import grid
from search.errors import InputError
from search.space import SearchSpace

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}


def build_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler the space names, seeded with the study's seed unless its options say else."""
    section = space.head.sampler
    cls = SAMPLERS[section.name]
    options = dict(section.options)
    accepted = inspect.signature(cls.__init__).parameters
    if "seed" in accepted:
        options.setdefault("seed", space.head.study.seed)
    try:
        if section.name == "grid":
            options.setdefault("search_space", grid(space.head.search))
        # QMC, GP and others are marked experimental by Optuna: a supported choice here, not
        # a problem to print on every search.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return cls(**options)
    except (TypeError, ValueError, ImportError) as error:
        raise InputError(space.source, "sampler.options", str(error).splitlines()[0]) from None
