"""Run every benchmark one after another: python benchmarks/run_all.py [--quick] [NAME ...]

Each writes benchmarks/results/NAME.json; a failing one is reported and the rest still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["overhead", "sampler_cost", "training_loop", "generation_cost", "concurrency",
              "search_efficiency", "data_pipeline", "warm_start"]


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
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
