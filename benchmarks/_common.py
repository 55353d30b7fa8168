"""What every benchmark shares: its environment, alternating repetitions, medians, the table it
prints and the JSON file it writes to benchmarks/results/.

Figures are ratios of two things measured side by side in one run, repeated with the order
alternating (A B, B A, A B, ...), and the median kept: on a shared machine a single timing
says little, but a load that comes and goes hits both sides of a pair alike.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "ray", "optuna", "cmaes", "numpy")

# Scripts run as `python benchmarks/NAME.py` and import this module first: from here on the
# repository's packages (launcher, search, objectives, benchmarks) import as usual.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


_load_at_start: list[float] = []


def setup(name: str) -> Path:
    """Make the repository importable in Ray's workers, and send every study to a temporary
    folder (removed at exit) instead of the repository's studies/."""
    # Ray's workers inherit the environment: this is how they import benchmarks.fixed_cost.
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    _load_at_start.extend(os.getloadavg() if hasattr(os, "getloadavg") else ())
    studies = Path(tempfile.mkdtemp(prefix=f"ftsearch-bench-{name}-"))
    os.environ["FTSEARCH_STUDIES"] = str(studies)
    atexit.register(shutil.rmtree, studies, ignore_errors=True)
    return studies


def parser(description: str, reps: bool = True) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=description)
    parse.add_argument("--quick", action="store_true", help="a smaller run (a minute or two)")
    if reps:
        parse.add_argument("--reps", type=int, default=3,
                           help="alternating repetitions; figures are medians (default 3)")
    return parse


def alternating(reps: int, variants: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(repetition, variant) with the variants' order reversed every other repetition."""
    for rep in range(reps):
        for variant in (variants if rep % 2 == 0 else list(reversed(variants))):
            yield rep, variant


def installed(module: str) -> bool:
    """Whether an optional package (an extra) is importable here."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and v == v]
    return statistics.median(finite) if finite else float("nan")


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as took: ...`` then ``took[0]`` is the wall time in seconds."""
    took: list[float] = []
    start = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - start)


def start_local_ray() -> float:
    """Start Ray the way the launcher does (loopback only); returns the seconds it took."""
    from search.runner import SearchRequest, start_ray

    with stopwatch() as took:
        start_ray(SearchRequest(space=None, study_name="", n_trials=0))  # type: ignore[arg-type]
    return took[0]


def run_launcher(argv: list[str]) -> float:
    """``launcher.main(argv)`` in this process, its output kept unless it fails; seconds."""
    import launcher

    out = io.StringIO()
    with stopwatch() as took, contextlib.redirect_stdout(out):
        code = launcher.main(argv)
    if code != 0:
        sys.stdout.write(out.getvalue())
        raise SystemExit(f"launcher {' '.join(argv)} exited with {code}")
    return took[0]


def role(process: Any) -> str:
    """What a process of a search's tree is, from its title: Ray names its services and its
    workers (``ray::IDLE``, ``ray::ImplicitFunc`` running a trial, ...)."""
    try:
        words = " ".join(process.cmdline()) or process.name()
    except Exception:  # noqa: BLE001 - it ended meanwhile
        return "ended"
    for name in ("raylet", "gcs_server", "dashboard_agent", "runtime_env", "log_monitor",
                 "monitor.py", "dashboard.py"):
        if name in words:
            return name.removesuffix(".py")
    if words.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):
        return words.removeprefix("ray::").split()[0]
    if words.startswith("ray::"):
        return "ray worker"
    return "other"


def pss_mb(pid: int) -> float | None:
    """A process's proportional set size in MB, from the kernel's one-line summary (reading
    it costs little, unlike the whole smaps); None once the process has ended."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class TreeMemory:
    """Samples the memory of a process and all its descendants every 2 s while running (a
    sample costs the kernel about 0.1 s of a core, walking the processes' page tables):
    ``peak_mb`` is the largest sum of their proportional set sizes (PSS: pages shared between
    processes, such as torch's libraries, are split among them, so nothing counts twice), and
    ``split`` that moment's total per role (see ``role``), with the number of processes;
    ``driver_series`` holds (time, MB) of the process itself at each sample."""

    def __init__(self, pid: int, driver: str = "launcher") -> None:
        import threading

        self.pid, self.driver = pid, driver
        self.peak_mb, self.split = 0.0, {}
        self.driver_series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        split: dict[str, list[float]] = {}
        for process in tree:
            mb = pss_mb(process.pid)
            if mb is None:
                continue
            name = self.driver if process.pid == self.pid else role(process)
            if process.pid == self.pid:
                self.driver_series.append((time.time(), mb))
            entry = split.setdefault(name, [0.0, 0])
            entry[0] += mb
            entry[1] += 1
        total = sum(mb for mb, _ in split.values())
        if total > self.peak_mb:
            self.peak_mb = total
            self.split = {name: {"mb": round(mb, 1), "processes": count}
                          for name, (mb, count) in sorted(split.items(), key=lambda kv: -kv[1][0])}

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.sample()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine shows here: 1-, 5- and 15-minute load averages.
        "load_average_at_start": _load_at_start or None,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def packages() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def goal(value: float, target: float, at_most: bool) -> dict[str, Any]:
    met = value <= target if at_most else value >= target
    return {"value": value, "goal": f"{'<=' if at_most else '>='} {target:g}",
            "met": bool(met) if value == value else None}


def _in_project(value: Any) -> Any:
    """Paths inside the project made relative to it, so a result names no machine's folders."""
    if isinstance(value, str):
        return value.removeprefix(f"{REPO}{os.sep}")
    if isinstance(value, dict):
        return {key: _in_project(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_in_project(item) for item in value]
    return value


def write(name: str, settings: dict[str, Any], figures: dict[str, Any],
          repetitions: list[dict[str, Any]], notes: list[str] | None = None) -> Path:
    """benchmarks/results/NAME.json: the figures and everything needed to judge them."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *_in_project(sys.argv)]),
        "machine": machine(),
        "packages": packages(),
        "settings": _in_project(settings),
        "figures": figures,
        "repetitions": repetitions,
        "notes": notes or [],
    }
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return path
