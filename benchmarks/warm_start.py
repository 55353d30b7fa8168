"""Warm start: an update search warm-started from the first month's study against the same
search started cold.

    python benchmarks/warm_start.py [--quick] [--trials 8] [--seeds 3]

The first month (spaces/monthly_first.yaml) is searched once. Then, for each seed, the update
(spaces/monthly_update.yaml: the first month's best adapter continued on the new month's data,
with replay) runs twice with the same trial budget, data and seed: with study.warm_start (the
first month's trials in the sampler's history, its best configurations queued after the
untuned default) and without it (cold). Seeds alternate which runs first. Both are measured on
the validation loss, which every evaluation reports.

Time to target: wall time from the launcher's start to the first evaluation whose loss reaches
the cold search's best of that seed times --target-factor (1.0: the cold search's own best).
A search that never reaches it counts its whole wall time (a bound).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import _common
import yaml
from search_efficiency import summarise, time_to

METHODS = ["warm", "cold"]


def write_space(name: str, folder: Path, seed: int, trials: int, warm: bool = True,
                first: str = "first") -> Path:
    """A shipped space measured on the validation loss, its data paths absolute, the first
    month's study named ``first``."""
    from search.space import resolve_space_path

    source = resolve_space_path(name)
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["study"] = {**raw["study"], "seed": seed, "n_trials": trials, "metric": "eval_loss",
                    "direction": "minimize"}
    if raw["study"].get("warm_start"):
        raw["study"]["warm_start"] = [first] if warm else []
    raw["model"] = {**raw["model"], **({"adapter": first} if raw["model"].get("adapter") else {})}
    data = raw["data"]
    data["path"] = str((source.parent / data["path"]).resolve())
    if data.get("replay"):
        data["replay"]["path"] = first
    path = folder / f"{source.stem}-{'warm' if warm else 'cold'}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0], reps=False)
    parse.add_argument("--trials", type=int, help="trials per update search (default 8, "
                       "quick 4)")
    parse.add_argument("--seeds", type=int, help="seeds, i.e. pairs of searches (default 3)")
    parse.add_argument("--target-factor", type=float, default=1.0,
                       help="target = this times the cold search's best loss (default 1.0)")
    args = parse.parse_args()
    trials = args.trials or (4 if args.quick else 8)
    seeds = args.seeds or 3

    studies = _common.setup("warm_start")
    folder = studies / "spaces"
    folder.mkdir()
    ray_start = _common.start_local_ray()
    took = _common.run_launcher(["--space", str(write_space("monthly_first.yaml", folder, 0,
                                                            trials + 2)),
                                 "--study", "first", "--quiet"])
    print(f"Ray start {ray_start:.1f} s; first month {took:.0f} s; {trials} trials per update "
          f"search, {seeds} seeds", flush=True)

    runs: dict[tuple[int, str], dict[str, Any]] = {}
    for seed, method in _common.alternating(seeds, METHODS):
        name = f"update-{method}-seed{seed}"
        space = write_space("monthly_update.yaml", folder, seed, trials, warm=method == "warm")
        began = time.time()
        took = _common.run_launcher(["--space", str(space), "--study", name, "--quiet"])
        runs[seed, method] = summarise(name, began, took)
        print(f"  seed {seed} {method:<5} {took:6.1f} s, best loss "
              f"{runs[seed, method]['best_loss']:.4f}", flush=True)

    reps = []
    for seed in range(seeds):
        warm, cold = runs[seed, "warm"], runs[seed, "cold"]
        target = args.target_factor * cold["best_loss"]
        ttt = {m: time_to(runs[seed, m], target) for m in METHODS}
        t_warm = ttt["warm"] if ttt["warm"] is not None else warm["wall_s"]
        t_cold = ttt["cold"] if ttt["cold"] is not None else cold["wall_s"]
        reps.append({"seed": seed, "target_loss": target, "time_to_target_s": ttt,
                     "speedup": t_cold / t_warm if t_warm else math.nan,
                     "best_loss": {m: runs[seed, m]["best_loss"] for m in METHODS},
                     "wall_s": {m: runs[seed, m]["wall_s"] for m in METHODS},
                     "states": {m: runs[seed, m]["states"] for m in METHODS}})

    def fmt(seconds: float | None) -> str:
        return "not reached" if seconds is None else f"{seconds:.0f} s"

    print()
    print(_common.table(["seed", "target loss", "to target: warm", "cold", "speedup",
                         "best loss (warm / cold)"],
                        [[r["seed"], f"{r['target_loss']:.4f}",
                          fmt(r["time_to_target_s"]["warm"]), fmt(r["time_to_target_s"]["cold"]),
                          r["speedup"], f"{r['best_loss']['warm']:.4f} / "
                          f"{r['best_loss']['cold']:.4f}"] for r in reps]))
    speedup = _common.median([r["speedup"] for r in reps])
    loss_ratio = _common.median([r["best_loss"]["warm"] / r["best_loss"]["cold"] for r in reps])
    print()
    print(_common.table(["figure (median over seeds)", "value"], [
        ["time to the cold search's best: cold / warm", speedup],
        ["best loss: warm / cold", loss_ratio]]))
    figures = {"time_to_target_speedup": speedup, "best_loss_ratio": loss_ratio,
               "ray_start_s": ray_start}
    settings = {"trials": trials, "seeds": seeds, "target_factor": args.target_factor}
    notes = ["a search that never reached the target counts its whole wall time (a bound)",
             "evaluation times are interpolated in steps between a trial's start and last "
             "report"]
    print(f"\nwrote {_common.write('warm_start', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
