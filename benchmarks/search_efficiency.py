"""Search efficiency: TPE + ASHA against random search that runs every trial to its end.

    python benchmarks/search_efficiency.py [--quick] [--trials 10] [--seeds 3]

Both search the default task (spaces/lora.yaml, or --space: its model, data, training recipe
and search section) with the same trial budget and the same seeds (study.seed); the random
search uses the random sampler, scheduler none and no recommended setting (the objective's own
early stopping on a stalled validation loss stays on in both: it is part of the recipe). Seeds
alternate which method runs first.

Time to target: wall time from the launcher's start to the first evaluation whose validation
loss reaches the target, where the target is --target-factor times the best loss seen in any
search of this run. An evaluation's time is interpolated in optimizer steps between the trial's
start (its worker.json) and its last report (metrics.jsonl), as evaluations are not timestamped.
The training examples all trials had processed by then are reported too: work, which a busy
machine does not change as it changes wall time.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import _common
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

METHODS = {
    "tpe+asha": {},  # the space as shipped, its recommended setting after the untuned default
    "random": {"sampler": {"name": "random"}, "scheduler": {"name": "none"}},
}
# Study settings of a method: plain random search has no recommended setting either.
STUDY = {"random": {"recommended": False}}
GOAL_SPEEDUP = 3.0


def write_space(space: str, folder: Path, method: str, seed: int, trials: int) -> Path:
    from search.space import resolve_space_path

    source = resolve_space_path(space)
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw = {**copy.deepcopy(raw), **METHODS[method]}
    # Measured on the validation loss, which every trial's curve has (the default space's
    # accuracy is flat at 0 until a trial has learnt to answer with a label).
    raw["study"] = {**raw["study"], **STUDY.get(method, {}), "seed": seed, "n_trials": trials,
                    "metric": "eval_loss", "direction": "minimize"}
    if "path" in raw.get("data", {}):
        raw["data"]["path"] = str((source.parent / raw["data"]["path"]).resolve())
    path = folder / f"{method.replace('+', '-')}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def span(trial: FrozenTrial) -> dict[str, float] | None:
    """When the trial trained (its code's start to its last report), how far, and how many
    training examples a step took; None for a trial that never evaluated."""
    folder = Path(trial.user_attrs["trial_dir"])
    if not trial.intermediate_values or not (folder / "worker.json").is_file():
        return None
    training = trial.user_attrs.get("config", {}).get("training", {})
    return {"start": (folder / "worker.json").stat().st_mtime,
            "end": (folder / "metrics.jsonl").stat().st_mtime,
            "steps": max(trial.intermediate_values),
            "examples_per_step": training.get("per_device_train_batch_size", 1)
            * training.get("gradient_accumulation_steps", 1)}


def evaluations(trial: FrozenTrial, where: dict[str, float]) -> list[tuple[float, float]]:
    """(seconds since epoch, validation loss) of each of the trial's evaluations."""
    points = [(where["start"] + (where["end"] - where["start"]) * step / where["steps"], value)
              for step, value in trial.intermediate_values.items()]
    if trial.state == TrialState.COMPLETE:
        points.append((trial.datetime_complete.timestamp(), trial.value))
    return points


def summarise(study_name: str, began: float, took: float) -> dict[str, Any]:
    from search.history import own
    from search.storage import StudyPaths, default_url

    study = optuna.load_study(study_name=study_name,
                              storage=default_url(StudyPaths.for_study(study_name)))
    trials = own(study.get_trials(deepcopy=False))  # not those of a warm start
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    spans = {t.number: span(t) for t in trials}
    return {
        "study": study_name,
        "wall_s": took,
        "began": began,
        "points": sorted(p for t in trials if spans[t.number]
                         for p in evaluations(t, spans[t.number])),
        "spans": [s for s in spans.values() if s],
        "best_loss": min(t.value for t in complete) if complete else math.nan,
        "steps": sum(max(t.intermediate_values, default=0) for t in trials),
        "states": {s.name: sum(t.state == s for t in trials)
                   for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
    }


def time_to(run: dict[str, Any], target: float) -> float | None:
    for when, loss in run["points"]:
        if loss <= target:
            return when - run["began"]
    return None


def examples_until(run: dict[str, Any], seconds: float | None) -> float:
    """Training examples all trials had processed that many seconds into the search (all of
    them for None): a measure of work that a busy machine does not change."""
    when = math.inf if seconds is None else run["began"] + seconds
    total = 0.0
    for s in run["spans"]:
        done = 1.0 if when >= s["end"] else max(0.0, (when - s["start"]) / (s["end"] - s["start"]))
        total += done * s["steps"] * s["examples_per_step"]
    return total


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0], reps=False)
    parse.add_argument("--trials", type=int, help="trials per search (default 10, quick 6)")
    parse.add_argument("--seeds", type=int, help="seeds, i.e. pairs of searches (default 3)")
    parse.add_argument("--space", default="lora.yaml",
                       help="space file, a name in spaces/ or a path (default lora.yaml)")
    parse.add_argument("--target-factor", type=float, default=1.2,
                       help="target = this times the best loss of the run (default 1.2)")
    args = parse.parse_args()
    trials = args.trials or (6 if args.quick else 10)
    seeds = args.seeds or 3

    studies = _common.setup("search_efficiency")
    from search.space import load_space

    folder = studies / "spaces"
    folder.mkdir()
    load_space(args.space)  # the driver's imports, outside any timing
    ray_start = _common.start_local_ray()
    print(f"Ray start {ray_start:.1f} s; {trials} trials per search, {seeds} seeds")

    runs: dict[tuple[int, str], dict[str, Any]] = {}
    for seed, method in _common.alternating(seeds, list(METHODS)):
        name = f"{method.replace('+', '-')}-seed{seed}"
        space_file = write_space(args.space, folder, method, seed, trials)
        began = time.time()
        took = _common.run_launcher(["--space", str(space_file), "--study", name, "--quiet"])
        runs[seed, method] = summarise(name, began, took)
        run = runs[seed, method]
        print(f"  seed {seed} {method:<8} {took:6.1f} s, best loss {run['best_loss']:.4f}, "
              f"{run['steps']} steps, {run['states']}", flush=True)

    best = min(loss for run in runs.values() for _, loss in run["points"])
    target = args.target_factor * best
    reps = []
    for seed in range(seeds):
        fast, slow = runs[seed, "tpe+asha"], runs[seed, "random"]
        ttt = {m: time_to(runs[seed, m], target) for m in METHODS}
        # A search that never reached the target counts its whole wall time: a bound.
        t_fast = ttt["tpe+asha"] if ttt["tpe+asha"] is not None else fast["wall_s"]
        t_slow = ttt["random"] if ttt["random"] is not None else slow["wall_s"]
        work = {m: examples_until(runs[seed, m], ttt[m]) for m in METHODS}
        reached = any(t is not None for t in ttt.values())
        reps.append({
            "seed": seed,
            "time_to_target_s": ttt,
            # Neither reached it: this seed says nothing about the speed-up.
            "speedup": t_slow / t_fast if reached else math.nan,
            "examples_to_target": work,
            "work_speedup": work["random"] / work["tpe+asha"] if reached else math.nan,
            "wall_speedup": slow["wall_s"] / fast["wall_s"],
            "steps_ratio": slow["steps"] / fast["steps"],
            "best_loss": {m: runs[seed, m]["best_loss"] for m in METHODS},
            "best_loss_ratio": fast["best_loss"] / slow["best_loss"],
            "wall_s": {m: runs[seed, m]["wall_s"] for m in METHODS},
            "steps": {m: runs[seed, m]["steps"] for m in METHODS},
            "states": {m: runs[seed, m]["states"] for m in METHODS},
        })

    def fmt(seconds: float | None) -> str:
        return "not reached" if seconds is None else f"{seconds:.0f} s"

    print(f"\ntarget: validation loss <= {target:.4f} ({args.target_factor:g} x the best, "
          f"{best:.4f})")
    rows = [[r["seed"], fmt(r["time_to_target_s"]["tpe+asha"]),
             fmt(r["time_to_target_s"]["random"]), r["speedup"], r["work_speedup"],
             f"{r['steps']['tpe+asha']} / {r['steps']['random']}",
             f"{r['best_loss']['tpe+asha']:.4f} / {r['best_loss']['random']:.4f}"] for r in reps]
    print(_common.table(["seed", "to target: tpe+asha", "random", "speedup",
                         "in examples", "steps (tpe+asha / random)",
                         "best loss (tpe+asha / random)"], rows))
    speedup = _common.median([r["speedup"] for r in reps])
    loss_ratio = _common.median([r["best_loss_ratio"] for r in reps])
    steps_ratio = _common.median([r["steps_ratio"] for r in reps])
    work = _common.median([r["work_speedup"] for r in reps])
    wall = _common.median([r["wall_speedup"] for r in reps])
    print()
    print(_common.table(["figure (median over seeds)", "value", "goal", "met"], [
        ["time to target: random / tpe+asha", speedup, f">= {GOAL_SPEEDUP:g}",
         speedup >= GOAL_SPEEDUP],
        ["training examples to target: random / tpe+asha", work, "", ""],
        ["best loss: tpe+asha / random", loss_ratio, "<= 1", loss_ratio <= 1.0],
        ["training steps: random / tpe+asha", steps_ratio, "", ""],
        ["search wall time: random / tpe+asha", wall, "", ""],
    ]))
    figures = {
        "target_loss": target, "best_loss_seen": best,
        "time_to_target_speedup": _common.goal(speedup, GOAL_SPEEDUP, at_most=False),
        "best_loss_ratio": _common.goal(loss_ratio, 1.0, at_most=True),
        "examples_to_target_speedup": work, "steps_ratio": steps_ratio,
        "wall_speedup": wall, "ray_start_s": ray_start,
    }
    settings = {"space": args.space, "trials": trials, "seeds": seeds,
                "target_factor": args.target_factor, "methods": METHODS}
    notes = ["a search that never reached the target counts its whole wall time and all its "
             "training examples (a bound)",
             "training examples to target: steps x batch x accumulation of every trial up to "
             "that moment, a measure of work that other load on the machine does not change",
             "evaluation times are interpolated in steps between a trial's start and last "
             "report"]
    print(f"\nwrote {_common.write('search_efficiency', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
