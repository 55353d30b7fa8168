"""Sampler cost: time per ask and per tell of TPE, GP and CMA-ES as a study grows.

    python benchmarks/sampler_cost.py [--quick] [--reps 3] [--storage memory|sqlite]

Each sampler gets a fresh study holding N finished trials (10, 100, 500), then one untimed
ask/tell and --asks timed ones. Every figure is also a ratio to the random sampler measured
beside it, which does no modelling: the rest is storage and Optuna's own bookkeeping.
Two six-parameter spaces like the default one (spaces/lora.yaml): "mixed" has its kinds (a
log-scale float, an int, four categoricals); "numeric" makes the categoricals ints, the kind
CMA-ES models (it would sample categoricals at random), so CMA-ES runs on it alone. TPE is
multivariate, as in the default space. The N trials are random, except CMA-ES's, which come from
its own ask/tell so that it can restore its state from them.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _common
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

LR = FloatDistribution(1e-5, 3e-2, log=True)
SPACES: dict[str, dict[str, BaseDistribution]] = {
    "mixed": {
        "learning_rate": LR,
        "batch_size": CategoricalDistribution([4, 8, 16]),
        "accumulation": IntDistribution(1, 2),
        "rank": CategoricalDistribution([4, 8, 16]),
        "alpha": CategoricalDistribution([8, 16, 32]),
        "heads": CategoricalDistribution([2, 4, 8]),
    },
    "numeric": {
        "learning_rate": LR,
        "batch_size": IntDistribution(4, 16, log=True),
        "accumulation": IntDistribution(1, 2),
        "rank": IntDistribution(4, 16, log=True),
        "alpha": IntDistribution(8, 32, log=True),
        "heads": IntDistribution(2, 8, log=True),
    },
}
SAMPLERS = {
    "random": lambda: optuna.samplers.RandomSampler(seed=0),
    "tpe": lambda: optuna.samplers.TPESampler(seed=0, multivariate=True),
    "gp": lambda: optuna.samplers.GPSampler(seed=0),
    "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=0),
}
RUNS = [("mixed", "random"), ("mixed", "tpe"), ("mixed", "gp"),
        ("numeric", "random"), ("numeric", "tpe"), ("numeric", "gp"), ("numeric", "cmaes")]


def value(params: dict[str, Any]) -> float:
    return ((math.log10(params["learning_rate"]) + 3) ** 2
            + 0.1 * abs(math.log2(params["batch_size"] / 8)) + 0.05 * params["accumulation"]
            + 0.1 * abs(math.log2(params["rank"] / 8)) + 0.1 * abs(math.log2(params["alpha"] / 16))
            + 0.05 * abs(math.log2(params["heads"] / 4)))


def history(space: str, sampler: str, n: int) -> list[optuna.trial.FrozenTrial]:
    """n finished trials from the sampler's own ask/tell (CMA-ES) or at random (the others)."""
    study = optuna.create_study(sampler=SAMPLERS["cmaes" if sampler == "cmaes" else "random"]())
    for _ in range(n):
        trial = study.ask(SPACES[space])
        study.tell(trial, value(trial.params))
    return study.trials


class Storages:
    """Fresh study storages: in memory, or SQLite files (as the service uses)."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder, self.count = kind, folder, itertools.count()

    def new(self) -> str | None:
        if self.kind == "memory":
            return None
        return f"sqlite:///{self.folder / f'study{next(self.count)}.db'}"


def measure(space: str, sampler: str, trials: list, asks: int, storages: Storages
            ) -> dict[str, float]:
    """Seconds per ask and per tell, averaged over ``asks`` after one untimed pair."""
    study = optuna.create_study(storage=storages.new(), sampler=SAMPLERS[sampler]())
    study.add_trials(trials)
    ask_s = tell_s = 0.0
    for i in range(asks + 1):
        start = time.perf_counter()
        trial = study.ask(SPACES[space])
        asked = time.perf_counter()
        study.tell(trial, value(trial.params))
        told = time.perf_counter()
        if i:  # the first pair pays one-off costs (imports, caches)
            ask_s += asked - start
            tell_s += told - asked
    return {"ask_s": ask_s / asks, "tell_s": tell_s / asks}


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    parse.add_argument("--levels", type=int, nargs="+", help="finished trials (default "
                       "10 100 500; quick 10 100)")
    parse.add_argument("--asks", type=int, default=5, help="timed asks per study (default 5)")
    parse.add_argument("--storage", choices=["memory", "sqlite"], default="memory",
                       help="where the studies live (default memory: the samplers' cost alone)")
    args = parse.parse_args()
    levels = args.levels or ([10, 100] if args.quick else [10, 100, 500])

    studies = _common.setup("sampler_cost")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storages = Storages(args.storage, Path(tempfile.mkdtemp(dir=studies)))

    reps: list[dict[str, Any]] = []
    for level in levels:
        made = {(space, sampler == "cmaes"): history(space, sampler, level)
                for space, sampler in RUNS}
        for rep in range(args.reps):
            order = RUNS[rep % len(RUNS):] + RUNS[:rep % len(RUNS)]  # a new order each time
            row: dict[str, Any] = {"level": level, "rep": rep}
            for space, sampler in (order if rep % 2 == 0 else list(reversed(order))):
                got = measure(space, sampler, made[space, sampler == "cmaes"], args.asks,
                              storages)
                row[f"{space}/{sampler}"] = got
            for space, sampler in RUNS:
                got = row[f"{space}/{sampler}"]
                random = row[f"{space}/random"]
                got["ask_ratio"] = got["ask_s"] / random["ask_s"]
                got["tell_ratio"] = got["tell_s"] / random["tell_s"]
            reps.append(row)
            print(f"  {level} trials, rep {rep}: " + ", ".join(
                f"{k} {v['ask_s'] * 1e3:.1f} ms" for k, v in row.items()
                if isinstance(v, dict)), flush=True)

    def med(space: str, sampler: str, level: int, key: str) -> float:
        return _common.median([r[f"{space}/{sampler}"][key] for r in reps
                               if r["level"] == level])

    figures: dict[str, Any] = {}
    rows = []
    for space, sampler in RUNS:
        cells: list[Any] = [sampler, space]
        for level in levels:
            ask = med(space, sampler, level, "ask_s")
            ratio = med(space, sampler, level, "ask_ratio")
            tell = med(space, sampler, level, "tell_s")
            cells += [f"{ask * 1e3:.1f} ({ratio:.1f}x)", f"{tell * 1e3:.1f}"]
            figures[f"{space}/{sampler}/{level}"] = {
                "ask_ms": ask * 1e3, "ask_vs_random": ratio, "tell_ms": tell * 1e3,
                "tell_vs_random": med(space, sampler, level, "tell_ratio")}
        rows.append(cells)
    headers = ["sampler", "space"]
    for level in levels:
        headers += [f"ask ms @{level} (x random)", f"tell ms @{level}"]
    print(f"\nmedian of {args.reps} alternating repetitions, {args.asks} asks each, "
          f"{args.storage} storage")
    print(_common.table(headers, rows))
    settings = {"levels": levels, "asks": args.asks, "reps": args.reps,
                "storage": args.storage, "spaces": {k: {n: repr(d) for n, d in v.items()}
                                                    for k, v in SPACES.items()}}
    notes = ["a study at level N holds N finished trials plus the untimed pair, and grows by "
             "one with each timed ask/tell"]
    print(f"\nwrote {_common.write('sampler_cost', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
