"""Scale: a search of 300 trials, and whether it slows down or grows as it goes.

    python benchmarks/scale.py [--quick] [--trials 300] [--trial-seconds 1]

One search of the fixed-cost objective (benchmarks/fixed_cost.py: T seconds of sleep a trial,
reporting once a second; six parameters like the default space's, TPE), two trials at a time,
run by the launcher in this process. Printed:

- overhead per trial, over the first and the last 50 trials to end: a window's span between
  its first and last end, times the concurrency, over its trials, less T; and their ratio
  (goal: the last 50 cost at most 1.2 times the first 50);
- the launcher process's memory (its proportional set size, see _common.TreeMemory) when the
  first trial has ended and at the end of the search (goal: it grows by at most 200 MB);
- the seconds to write the study's report (goal: at most 30 s) and to read every trial back.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import _common
import optuna
from overhead import SAMPLER_OPTIONS, write_space

WINDOW = 50
GOAL_OVERHEAD_RATIO = 1.2
GOAL_GROWTH_MB = 200
GOAL_REPORT_S = 30


def window_overhead(ends: list[float], seconds: float, concurrency: int) -> float:
    """Seconds per trial beyond T, from the end times of consecutive trials."""
    return (ends[-1] - ends[0]) * concurrency / (len(ends) - 1) - seconds


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0], reps=False)
    parse.add_argument("--trials", type=int, help="trials in the search (default 300)")
    parse.add_argument("--trial-seconds", type=float, default=1.0, help="sleep per trial")
    args = parse.parse_args()
    trials = args.trials or (120 if args.quick else 300)
    studies = _common.setup("scale")
    import objectives

    objectives.OBJECTIVES["fixed_cost"] = "benchmarks.fixed_cost:FixedCost"
    folder = Path(tempfile.mkdtemp(dir=studies, prefix="spaces-"))
    space = write_space(folder, trials, args.trial_seconds, concurrency=2)
    _common.start_local_ray()

    with _common.TreeMemory(os.getpid()) as memory:
        took = _common.run_launcher(["--space", str(space), "--study", "scale", "--quiet"])
    from search.storage import StudyPaths, default_url

    url = default_url(StudyPaths.for_study("scale"))
    with _common.stopwatch() as read:
        study = optuna.load_study(study_name="scale", storage=url)
        done = [t for t in study.get_trials() if t.datetime_complete]
    ends = sorted(t.datetime_complete.timestamp() for t in done)
    first_end = ends[0]
    # The first trial's end waits for a new worker; the window starts after it.
    first = window_overhead(ends[1:WINDOW + 1], args.trial_seconds, 2)
    last = window_overhead(ends[-WINDOW:], args.trial_seconds, 2)
    at_first = next((mb for at, mb in memory.driver_series if at >= first_end),
                    memory.driver_series[0][1])
    at_end = memory.driver_series[-1][1]
    with _common.stopwatch() as report:
        _common.run_launcher(["report", "scale", "--out", str(folder / "report.html")])

    rows = [
        ["trials finished", len(done), trials, len(done) == trials],
        ["search wall time, s", took, "", ""],
        [f"overhead per trial, first {WINDOW} (after the first trial), s", first, "", ""],
        [f"overhead per trial, last {WINDOW}, s", last, "", ""],
        ["last / first", last / first, f"<= {GOAL_OVERHEAD_RATIO}",
         last / first <= GOAL_OVERHEAD_RATIO],
        ["launcher memory after the first trial, MB", at_first, "", ""],
        ["launcher memory at the end, MB", at_end, "", ""],
        ["launcher memory growth, MB", at_end - at_first, f"<= {GOAL_GROWTH_MB}",
         at_end - at_first <= GOAL_GROWTH_MB],
        ["peak memory of the whole process tree, MB", memory.peak_mb, "", ""],
        [f"report of {len(done)} trials, s", report[0], f"<= {GOAL_REPORT_S}",
         report[0] <= GOAL_REPORT_S],
        ["reading every trial back from the study, s", read[0], "", ""],
    ]
    print(_common.table(["figure", "value", "goal", "met"], rows))
    figures = {
        "trials_finished": len(done),
        "search_s": took,
        "overhead_first_s": first,
        "overhead_last_s": last,
        "overhead_ratio": _common.goal(last / first, GOAL_OVERHEAD_RATIO, at_most=True),
        "launcher_mb_after_first_trial": at_first,
        "launcher_mb_at_end": at_end,
        "launcher_growth_mb": _common.goal(at_end - at_first, GOAL_GROWTH_MB, at_most=True),
        "peak_tree_mb": memory.peak_mb,
        "report_s": _common.goal(report[0], GOAL_REPORT_S, at_most=True),
        "read_trials_s": read[0],
    }
    settings = {"trials": trials, "trial_seconds": args.trial_seconds,
                "max_concurrent_trials": 2, "sampler": {"name": "tpe", **SAMPLER_OPTIONS},
                "window": WINDOW}
    print(f"\nwrote {_common.write('scale', settings, figures, [], [])}")


if __name__ == "__main__":
    main()
