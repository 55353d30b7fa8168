"""Concurrency: trials per hour with two single-threaded trials at a time against one at a time.

    python benchmarks/concurrency.py [--quick] [--reps 3] [--trials 6] [--steps 120]

Both searches run the same trials of the default objective (spaces/lora.yaml's recipe, shortened
to --steps optimizer steps): the untuned baseline, then a grid of as many learning rates as
trials, the first of them the baseline's (a grid point already tried is not tried again, so the
search runs exactly --trials trials: an even number fills both slots to the end), with scheduler
none and one CPU (one torch thread) per trial. Only study.max_concurrent_trials differs: 1 or 2.
Ray is started once, before the first search. Trial durations (the study's ask to tell) show
how much slower each trial runs beside another: on 2 cores the driver, Ray's own processes and
anything else on the machine then compete with the trials for CPU.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import _common
import yaml

LEARNING_RATES = [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2, 3.0e-5, 1.0e-5, 2.0e-3]
GOAL_RATIO = 1.8


def write_space(folder: Path, concurrent: int, trials: int, steps: int) -> Path:
    from search.space import resolve_space_path

    source = resolve_space_path("lora.yaml")
    raw = copy.deepcopy(yaml.safe_load(source.read_text(encoding="utf-8")))
    raw["study"] = {**raw["study"], "n_trials": trials, "max_concurrent_trials": concurrent}
    raw["sampler"] = {"name": "grid"}  # the baseline, then each learning rate once
    raw["scheduler"] = {"name": "none"}
    raw["resources"] = {"cpu": 1, "gpu": 0}
    # The baseline trial takes its value from here, and a categorical must offer it.
    raw["training"] = {**raw["training"], "max_steps": steps,
                       "learning_rate": LEARNING_RATES[0]}
    raw["data"]["path"] = str((source.parent / raw["data"]["path"]).resolve())
    raw["search"] = {"training.learning_rate": {"type": "categorical",
                                                "choices": LEARNING_RATES[:trials]}}
    path = folder / f"concurrent-{concurrent}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def trial_seconds(study_name: str, actors: int) -> float:
    """Median ask-to-tell time of the trials after the first ones, which start Ray actors."""
    import optuna

    from search.storage import StudyPaths, default_url

    study = optuna.load_study(study_name=study_name,
                              storage=default_url(StudyPaths.for_study(study_name)))
    trials = sorted(study.trials, key=lambda t: t.number)[actors:]
    return _common.median([(t.datetime_complete - t.datetime_start).total_seconds()
                           for t in trials])


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    parse.add_argument("--trials", type=int, help="trials per search (default 6, quick 4)")
    parse.add_argument("--steps", type=int, help="optimizer steps per trial (default 120, "
                       "quick 60)")
    args = parse.parse_args()
    trials = args.trials or (4 if args.quick else 6)
    steps = args.steps or (60 if args.quick else 120)
    if not 2 <= trials <= len(LEARNING_RATES):
        raise SystemExit(f"--trials must be 2..{len(LEARNING_RATES)}")

    studies = _common.setup("concurrency")
    from search.space import load_space

    folder = studies / "spaces"
    folder.mkdir()
    spaces = {n: write_space(folder, n, trials, steps) for n in (1, 2)}
    load_space(str(spaces[1]))  # the driver's imports and data checks, outside any timing
    ray_start = _common.start_local_ray()
    print(f"Ray start {ray_start:.1f} s; {trials} trials of {steps} steps per search, "
          f"{os.cpu_count()} CPUs")

    reps: list[dict[str, Any]] = [{"rep": rep} for rep in range(args.reps)]
    for rep, variant in _common.alternating(args.reps, ["1 at a time", "2 at a time"]):
        concurrent = int(variant[0])
        took = _common.run_launcher(["--space", str(spaces[concurrent]),
                                     "--study", f"c{concurrent}-{rep}", "--quiet"])
        reps[rep][f"wall_s_{concurrent}"] = took
        reps[rep][f"trial_s_{concurrent}"] = trial_seconds(f"c{concurrent}-{rep}", concurrent)
        reps[rep][f"trials_per_hour_{concurrent}"] = trials * 3600 / took
        print(f"  rep {rep} {variant}: {took:.1f} s", flush=True)
    for r in reps:
        r["ratio"] = r["trials_per_hour_2"] / r["trials_per_hour_1"]
        r["trial_slowdown"] = r["trial_s_2"] / r["trial_s_1"]
    ratio = _common.median([r["ratio"] for r in reps])
    slowdown = _common.median([r["trial_slowdown"] for r in reps])

    print(f"\nmedian of {args.reps} alternating repetitions")
    print(_common.table(["figure", "value", "goal", "met"], [
        ["trials/hour, 1 at a time", _common.median([r["trials_per_hour_1"] for r in reps]),
         "", ""],
        ["trials/hour, 2 at a time", _common.median([r["trials_per_hour_2"] for r in reps]),
         "", ""],
        ["2 at a time / 1 at a time", ratio, f">= {GOAL_RATIO}", ratio >= GOAL_RATIO],
        ["trial duration, 2 at a time / 1 at a time", slowdown, "", ""],
    ]))
    figures = {
        "ratio": _common.goal(ratio, GOAL_RATIO, at_most=False),
        "trials_per_hour_1": _common.median([r["trials_per_hour_1"] for r in reps]),
        "trials_per_hour_2": _common.median([r["trials_per_hour_2"] for r in reps]),
        "trial_slowdown": slowdown,
        "ray_start_s": ray_start,
    }
    settings = {"space": "spaces/lora.yaml (grid of learning rates, scheduler none)",
                "trials": trials, "steps": steps, "reps": args.reps,
                "learning_rates": LEARNING_RATES[:trials], "cpu_per_trial": 1}
    notes = ["trials/hour = trials / launcher wall time (Ray start excluded; each search "
             "starts its own Ray actors, one per concurrent trial)"]
    print(f"\nwrote {_common.write('concurrency', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
