"""Run every benchmark one after another: python benchmarks/run_all.py [--quick] [NAME ...]

Each writes benchmarks/results/NAME.json; a failing one is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["overhead", "sampler_cost", "training_loop", "generation_cost", "concurrency",
              "search_efficiency", "data_pipeline", "warm_start", "scale", "peer"]


def main() -> int:
    parse = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parse.add_argument("--quick", action="store_true", help="each benchmark's smaller run")
    parse.add_argument("names", nargs="*", metavar="NAME",
                       help=f"some of: {', '.join(BENCHMARKS)} (default all)")
    args = parse.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parse.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    failed = []
    for name in args.names or BENCHMARKS:
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        start = time.monotonic()
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - start:.0f} s", flush=True)
    print("\n=== goals")
    for name in args.names or BENCHMARKS:
        for line in goal_lines(name):
            print(line)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def goal_lines(name: str) -> list[str]:
    """Each goal a benchmark's last result holds (a figure with a goal, see _common.goal), as
    '✔ name figure: value (goal)' or ✘, oldest results included with their date."""
    path = HERE / "results" / f"{name}.json"
    if not path.is_file():
        return [f"? {name}: no result"]
    record = json.loads(path.read_text(encoding="utf-8"))
    lines = []

    def walk(figures: dict, prefix: str) -> None:
        for key, value in figures.items():
            if isinstance(value, dict) and {"value", "goal", "met"} <= value.keys():
                mark = {True: "✔", False: "✘"}.get(value["met"], "?")
                lines.append(f"{mark} {name} {prefix}{key}: {value['value']:.3g} "
                             f"(goal {value['goal']}; {record['date'][:10]})")
            elif isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(record.get("figures", {}), "")
    return lines


if __name__ == "__main__":
    sys.exit(main())
