"""Service overhead: the launcher against a plain Optuna loop, on an objective of fixed cost.

    python benchmarks/overhead.py [--quick] [--trial-seconds 30] [--trials 8]

Both run the same N trials one at a time with the same objective (benchmarks/fixed_cost.py: it
sleeps T seconds, reporting once a second), the same TPE sampler and seed, the untuned baseline
first, and SQLite storage. What the launcher takes beyond N*T is the service's: Ray Tune's trial
scheduling, the study bookkeeping, trial folders and the summary. Ray is started once before
the first repetition (its start is reported apart), and one untimed search warms the process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import _common
import optuna
import yaml

SEARCH = {
    "params.learning_rate": {"type": "float", "low": 1.0e-5, "high": 3.0e-2, "log": True},
    "params.batch_size": {"type": "categorical", "choices": [4, 8, 16]},
    "params.accumulation": {"type": "int", "low": 1, "high": 2},
    "params.rank": {"type": "categorical", "choices": [4, 8, 16]},
    "params.alpha": {"type": "categorical", "choices": [8, 16, 32]},
    "params.heads": {"type": "categorical", "choices": [2, 4, 8]},
}
SAMPLER_OPTIONS = {"multivariate": True, "n_startup_trials": 6}  # as in spaces/lora.yaml
GOAL_RATIO_30S = 1.02
GOAL_SECONDS_PER_TRIAL = 0.100
# The launcher again with each tracker on: MLflow's own SQLite store (the client's whole cost,
# no server between), W&B offline (run files, no network).
TRACKERS = {
    "mlflow": lambda folder: {"mlflow": {"uri": f"sqlite:///{folder / 'mlflow.db'}",
                                         "artifact_location": str(folder / "mlflow")}},
    "wandb": lambda folder: {"wandb": {"project": "overhead", "mode": "offline"}},
}


def write_space(folder: Path, trials: int, seconds: float, tracking: str | None = None,
                concurrency: int = 1) -> Path:
    """The fixed-cost space, ``concurrency`` trials at a time; ``tracking`` sends its trials to
    MLflow or W&B too (see TRACKERS)."""
    space = {
        "objective": "fixed_cost",
        "study": {"n_trials": trials, "max_concurrent_trials": concurrency, "seed": 0},
        "sampler": {"name": "tpe", "options": SAMPLER_OPTIONS},
        "scheduler": {"name": "none"},
        "resources": {"cpu": 1, "gpu": 0},
        "cost": {"seconds": seconds},
        "search": SEARCH,
        **({"tracking": TRACKERS[tracking](folder)} if tracking else {}),
    }
    path = folder / (f"fixed_cost_{seconds:g}s_{trials}x{concurrency}"
                     f"{'_' + tracking if tracking else ''}.yaml")
    path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    return path


class OptunaReporter:
    """The plain loop's reporter: intermediate values straight into the Optuna trial."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def report(self, metrics: dict[str, Any]) -> None:
        if "outcome" not in metrics:
            self.trial.report(metrics["eval_loss"], metrics["step"])


def plain_loop(space_file: Path, trials: int, folder: Path) -> float:
    """What a user would write without the service: study.optimize on the same objective."""
    from objectives.base import TrialContext
    from search.distributions import DefineByRun
    from search.space import load_space

    with _common.stopwatch() as took:
        space = load_space(str(space_file))
        folder.mkdir(parents=True)
        study = optuna.create_study(
            storage=f"sqlite:///{folder / 'optuna.db'}", direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=0, **SAMPLER_OPTIONS))
        study.enqueue_trial(space.baseline_params())
        suggest = DefineByRun(space.head.search)

        def objective(trial: optuna.Trial) -> float:
            suggest(trial)
            trial_dir = folder / f"{trial.number:04d}"
            trial_dir.mkdir()
            context = TrialContext(number=trial.number, trial_dir=trial_dir,
                                   prepared_dir=folder, reporter=OptunaReporter(trial))
            space.objective.run(space.trial_config(trial.params), context)
            return context.history[-1]["eval_loss"]

        study.optimize(objective, n_trials=trials)
    return took[0]


def launcher_breakdown(study_name: str, seconds: float, took: float) -> dict[str, float]:
    """Where the launcher's time beyond the sleeps went, from the study's timestamps (a trial
    starts at the sampler's ask and ends at its tell) and the trial folder (worker.json is
    written as the trial's code starts): these parts add up to the launcher's wall time."""
    from search.storage import StudyPaths, default_url

    study = optuna.load_study(study_name=study_name,
                              storage=default_url(StudyPaths.for_study(study_name)))
    trials = sorted(study.trials, key=lambda t: t.number)
    first = trials[0]
    ask, tell = first.datetime_start.timestamp(), first.datetime_complete.timestamp()
    started = (Path(first.user_attrs["trial_dir"]) / "worker.json").stat().st_mtime
    cycles = [(b.datetime_complete - a.datetime_complete).total_seconds() - seconds
              for a, b in zip(trials, trials[1:], strict=False)]
    searching = trials[-1].datetime_complete.timestamp() - ask
    return {
        "first_trial_start_s": started - ask,  # a new Ray actor: process, imports
        "first_trial_extra_s": tell - ask - seconds,
        "steady_per_trial_s": _common.median(cycles) if cycles else float("nan"),
        "steady_total_s": sum(cycles),
        "setup_and_end_s": took - searching,  # space, study, Tuner; then summary, best/
    }


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    parse.add_argument("--trial-seconds", type=float, help="sleep per trial (default 3)")
    parse.add_argument("--trials", type=int, help="trials per search (default 8)")
    args = parse.parse_args()
    seconds = args.trial_seconds or (2.0 if args.quick else 3.0)
    trials = args.trials or (4 if args.quick else 8)

    studies = _common.setup("overhead")
    import objectives

    objectives.OBJECTIVES["fixed_cost"] = "benchmarks.fixed_cost:FixedCost"
    folder = Path(tempfile.mkdtemp(dir=studies, prefix="spaces-"))
    space_file = write_space(folder, trials, seconds)

    ray_start = _common.start_local_ray()
    warmup = _common.run_launcher(["--space", str(write_space(folder, 1, 0.1)),
                                   "--study", "warmup", "--quiet"])
    print(f"Ray start {ray_start:.1f} s; first search in this process (1 trial of 0.1 s) "
          f"{warmup:.1f} s")
    trackers = [name for name in TRACKERS if _common.installed(name)]
    for name in trackers:  # the trackers' first use (imports, the store's tables), untimed
        _common.run_launcher(["--space", str(write_space(folder, 1, 0.1, name)),
                              "--study", f"warmup-{name}", "--quiet"])

    reps: list[dict[str, Any]] = [{"rep": rep} for rep in range(args.reps)]
    for rep, variant in _common.alternating(args.reps, ["launcher", "plain", *trackers]):
        if variant == "launcher":
            name = f"launcher-{rep}"
            took = _common.run_launcher(["--space", str(space_file), "--study", name, "--quiet"])
            reps[rep].update(launcher_breakdown(name, seconds, took))
        elif variant == "plain":
            took = plain_loop(space_file, trials, studies / f"plain-{rep}")
        else:
            took = _common.run_launcher(["--space", str(write_space(folder, trials, seconds,
                                                                    variant)),
                                         "--study", f"{variant}-{rep}", "--quiet"])
        reps[rep][f"{variant}_s"] = took
        print(f"  rep {rep} {variant:<8} {took:.2f} s", flush=True)

    sleep = trials * seconds
    for r in reps:
        r["ratio"] = r["launcher_s"] / r["plain_s"]
        r["launcher_per_trial_s"] = (r["launcher_s"] - sleep) / trials
        r["plain_per_trial_s"] = (r["plain_s"] - sleep) / trials
        r["ratio_30s"] = (30 + r["launcher_per_trial_s"]) / (30 + r["plain_per_trial_s"])
        for name in trackers:
            r[f"{name}_per_trial_s"] = (r[f"{name}_s"] - r["launcher_s"]) / trials
    med = {key: _common.median([r[key] for r in reps]) for key in reps[0] if key != "rep"}

    print(f"\n{trials} trials of {seconds:g} s, one at a time; median of {args.reps} "
          "alternating repetitions")
    rows = [
        ["launcher / plain Optuna loop", med["ratio"], "", ""],
        ["launcher / plain, 30-s trials" + (" (measured)" if seconds == 30 else
                                           " (from per-trial overhead)"),
         med["ratio_30s"], f"<= {GOAL_RATIO_30S}", med["ratio_30s"] <= GOAL_RATIO_30S],
        ["launcher overhead per trial, s", med["launcher_per_trial_s"],
         f"<= {GOAL_SECONDS_PER_TRIAL}", med["launcher_per_trial_s"] <= GOAL_SECONDS_PER_TRIAL],
        ["  per search: setup and end (space, study, Tuner; summary), s",
         med["setup_and_end_s"], "", ""],
        ["  per search: first trial beyond T (new Ray actor, imports), s",
         med["first_trial_extra_s"], "", ""],
        ["  per trial after the first (steady state), s", med["steady_per_trial_s"],
         f"<= {GOAL_SECONDS_PER_TRIAL}", med["steady_per_trial_s"] <= GOAL_SECONDS_PER_TRIAL],
        ["plain loop overhead per trial, s", med["plain_per_trial_s"], "", ""],
        *([f"tracking cost per trial: {name} (tracked - untracked launcher) / N, s",
           med[f"{name}_per_trial_s"], "", ""] for name in trackers),
        ["Ray start (once per process, excluded), s", ray_start, "", ""],
    ]
    print(_common.table(["figure", "value", "goal", "met"], rows))

    figures = {
        "ratio": med["ratio"],
        "ratio_30s": _common.goal(med["ratio_30s"], GOAL_RATIO_30S, at_most=True),
        "launcher_overhead_per_trial_s": _common.goal(med["launcher_per_trial_s"],
                                                      GOAL_SECONDS_PER_TRIAL, at_most=True),
        "setup_and_end_s": med["setup_and_end_s"],
        "first_trial_start_s": med["first_trial_start_s"],
        "first_trial_extra_s": med["first_trial_extra_s"],
        "steady_per_trial_s": _common.goal(med["steady_per_trial_s"], GOAL_SECONDS_PER_TRIAL,
                                           at_most=True),
        "plain_overhead_per_trial_s": med["plain_per_trial_s"],
        "ray_start_s": ray_start,
        **{f"{name}_tracking_per_trial_s": med[f"{name}_per_trial_s"] for name in trackers},
        "first_search_in_process_s": warmup,
    }
    settings = {"trials": trials, "trial_seconds": seconds, "reps": args.reps,
                "sampler": {"name": "tpe", **SAMPLER_OPTIONS}, "max_concurrent_trials": 1}
    notes = ["ratio_30s is measured directly with --trial-seconds 30; otherwise it is "
             "(30 + launcher overhead per trial) / (30 + plain overhead per trial) at the same "
             "trial count",
             "launcher overhead per trial = (launcher wall time - N*T) / N, Ray start excluded; "
             "it is setup_and_end + first_trial_extra + (N-1) * steady_per_trial, over N"]
    print(f"\nwrote {_common.write('overhead', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
