"""Optuna samplers by name, with their options from the space.

The grid is not Optuna's GridSampler, which knows nothing of the untuned baseline (enqueued
first) and picks a point it already ran: here each grid point but the baseline's is enqueued
once (see search.searcher), in file order, and the sampler only ever replays enqueued points.
"""

from __future__ import annotations

import importlib.util
import inspect
import threading
import warnings
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection

from search.distributions import grid
from search.errors import InputError
from search.space import SearchSpace

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.RandomSampler,  # replays the enqueued grid points
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
}


SINGLE_OBJECTIVE = {"cmaes"}  # the others take a multi-objective study
# Samplers that need a package not every machine has: the package, and what to install.
NEEDS = {"cmaes": ("cmaes", "pip install cmaes"), "gp": ("scipy", "pip install scipy")}


def build_sampler(space: SearchSpace, history: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler the space names, seeded with the study's seed unless its options say else.

    ``history`` is the number of trials the study already holds: a resumed search seeds with
    seed + history, so a seeded sampler does not replay the trials it proposed the first time.
    """
    section = space.head.sampler
    if space.head.study.multi and section.name in SINGLE_OBJECTIVE:
        multi = ", ".join(name for name in SAMPLERS if name not in SINGLE_OBJECTIVE)
        raise InputError(space.source, "sampler.name", f"{section.name} optimises one metric; "
                         f"for {len(space.head.study.metrics)} metrics use one of: {multi}")
    if section.name in NEEDS and importlib.util.find_spec(NEEDS[section.name][0]) is None:
        package, install = NEEDS[section.name]
        raise InputError(space.source, "sampler.name", f"{section.name} needs the {package} "
                         f"package: {install}")
    cls = SAMPLERS[section.name]
    options = dict(section.options)
    accepted = inspect.signature(cls.__init__).parameters
    if "seed" in accepted:
        options.setdefault("seed", space.head.study.seed + history)
    try:
        if section.name == "grid":
            grid(space.head.search)  # every parameter has a finite set of values
        # QMC, GP and others are marked experimental by Optuna: a supported choice here, not
        # a problem to print on every search.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            sampler = cls(**options)
    except Exception as error:  # noqa: BLE001 - any option the sampler cannot take is input
        raise InputError(space.source, "sampler.options", str(error).splitlines()[0]) from None
    _picklable_locks(sampler)
    if space.head.study.multi:
        sampler = FirstObjectiveCurves(sampler)
    return InOrder(sampler) if space.head.study.reproducible else sampler


_LOCK = type(threading.Lock())


class PicklableLock:
    """A thread lock that pickles as a new, unlocked one. Ray Tune pickles the searcher, and
    with it the sampler (when the Tuner starts and at each experiment checkpoint); Optuna's
    genetic samplers (NSGA-II, NSGA-III) hold a plain lock since Optuna 5.1, which cannot be
    pickled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)

    def __reduce__(self) -> tuple[type, tuple]:
        return PicklableLock, ()


def _picklable_locks(sampler: BaseSampler) -> None:
    """Swap the thread locks a sampler holds for PicklableLocks."""
    for name, value in vars(sampler).items():
        if isinstance(value, _LOCK):
            setattr(sampler, name, PicklableLock())


class _FirstDirection:
    """A multi-objective study as a sampler sees it: its ``direction`` is the first
    objective's, the one whose learning curve trials report; all else is the study's."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    @property
    def direction(self) -> StudyDirection:
        return self._study.directions[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class _Visible:
    """A study as a sampler sees it when only some finished trials may count: its trial lists
    hold those trials (by number) alone; all else is the study's."""

    def __init__(self, study: optuna.Study, numbers: frozenset[int]) -> None:
        self._study, self._numbers = study, numbers

    def get_trials(self, *args: Any, **kwargs: Any) -> list:
        return [t for t in self._study.get_trials(*args, **kwargs) if t.number in self._numbers]

    def _get_trials(self, *args: Any, **kwargs: Any) -> list:
        return [t for t in self._study._get_trials(*args, **kwargs) if t.number in self._numbers]

    @property
    def trials(self) -> list:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class _SamplerOnView(BaseSampler):
    """A sampler that hands its inner sampler a view of the study (``view``) in every call."""

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner

    def view(self, study: optuna.Study) -> Any:
        raise NotImplementedError

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(self.view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(self.view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(self.view(study), trial, param_name,
                                             param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(self.view(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(self.view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class FirstObjectiveCurves(_SamplerOnView):
    """A sampler of a multi-objective study whose PRUNED trials carry learning curves.

    Optuna's samplers assume a multi-objective study has no intermediate values: TPE ranks
    PRUNED trials by their last one in ``study.direction``, which a multi-objective study
    refuses (RuntimeError). Here the curves are the first objective's, so that is the
    direction to rank them in: the sampler sees the study with it (tests/search/
    test_samplers.py pins Optuna's behaviour)."""

    def view(self, study: optuna.Study) -> Any:
        return _FirstDirection(study)


class InOrder(_SamplerOnView):
    """A sampler that sees only the finished trials it is told to (``visible``), whatever else
    has finished by the time it is asked.

    The searcher of a reproducible search (``study.reproducible``) shows it, for the trial it
    asks for, the same trials in every run; a seeded sampler then makes the same choices.
    """

    def __init__(self, inner: BaseSampler) -> None:
        super().__init__(inner)
        self.visible: frozenset[int] = frozenset()

    def view(self, study: optuna.Study) -> Any:
        return _Visible(study, self.visible)
