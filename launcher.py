"""Search the hyperparameters of a fine-tune: python launcher.py --space lora.yaml (installed,
the same command is ``ftsearch --space lora.yaml``).

Other commands work on a study once it exists: report, dashboard, export, compare; and on a Ray
cluster:
submit, jobs. Exit codes: 0 done, 2 bad input (one line naming the file and the field),
1 anything else (FTSEARCH_DEBUG=1 prints the traceback).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from pathlib import Path

COMMANDS = ("run", "report", "dashboard", "export", "compare", "submit", "jobs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsearch" if Path(sys.argv[0]).name == "ftsearch" else "launcher.py",
        description="Search the hyperparameters of a fine-tune with Ray Tune and Optuna. "
        "Without a command, runs a search: launcher.py --space lora.yaml")
    parser.add_argument("--version", action="version", version=f"ftsearch {version()}")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run a search (the default command)")
    run.add_argument("--space", required=True,
                     help="space file: a name in spaces/ (lora.yaml) or a path")
    run.add_argument("--study", help="study name (default: the space's, else its file name)")
    run.add_argument("--trials", type=int, help="trial count, overriding the space's")
    run.add_argument("--resume", action="store_true",
                     help="continue an existing study up to its trial count")
    run.add_argument("--address", help="join a running Ray cluster (auto or HOST:PORT)")
    run.add_argument("--quiet", action="store_true",
                     help="print only failures and the final summary (for batch jobs)")
    run.add_argument("--mlflow", metavar="URI",
                     help="also send each trial to this MLflow tracking server, the study as "
                     "a parent run (see the space's tracking section)")

    report = commands.add_parser(
        "report", help="write a study's report: one HTML file that opens offline")
    report.add_argument("target", metavar="STUDY_OR_STORAGE_URL",
                        help="a study name (studies/NAME/optuna.db) or an Optuna storage URL")
    report.add_argument("--study", help="the study in that storage, when it holds several")
    report.add_argument("--out", type=Path,
                        help="default: studies/NAME/report.html, or ./report.html for a URL")

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard for a study")
    dashboard.add_argument("target", metavar="STUDY_OR_STORAGE_URL")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="default 127.0.0.1; any other address exposes a dashboard "
                           "with no login")
    dashboard.add_argument("--port", type=int, default=8080)

    export = commands.add_parser(
        "export", help="export a study's best trial: for Ollama, or a merged classifier")
    export.add_argument("target", metavar="STUDY_OR_STORAGE_URL",
                        help="a study name (its folder under studies/) or an Optuna storage URL")
    export.add_argument("--study", help="the study in that storage, when it holds several")
    export.add_argument("--trial", type=int, help="trial number (default: the best complete one)")
    export.add_argument("--out", help="output folder (default: studies/<study>/export)")
    export.add_argument("--quantize",
                        help="GGUF weight type of a causal LM: f16 (default), q8_0 (8-bit, about "
                        "half the size), or q4_k_m / q4_k_s (llama.cpp's 4-bit k-quants, made "
                        "by its quantiser: the [llama] extra); a classifier exports as "
                        "safetensors")

    compare = commands.add_parser(
        "compare", help="is trial A really better than B? a paired test on the test split")
    compare.add_argument("target", metavar="STUDY_OR_STORAGE_URL")
    compare.add_argument("--study", help="the study in that storage, when it holds several")
    compare.add_argument("--a", "--trial", dest="a", type=int,
                         help="trial A (default: the best; one of the Pareto front in a "
                         "multi-objective study)")
    compare.add_argument("--b", help="trial B (default: the untuned default), or STUDY[:TRIAL] "
                         "of another study (its best trial without :TRIAL)")
    compare.add_argument("--split", default="test", choices=["test", "old_test"],
                         help="test (default), or old_test: an update's earlier test split, "
                         "which a trial of the study it replayed answered as its test split")
    compare.add_argument("--metric", help="e.g. accuracy (default: the study's metric)")
    compare.add_argument("--sheet", type=Path, help="write a blind A/B sheet for people to rate "
                         "(and its key beside it, FILE.key.csv)")
    compare.add_argument("--ratings", type=Path, help="read a rated sheet back: the rating of "
                         "each side and a sign test")

    submit = commands.add_parser(
        "submit", help="submit a search to a Ray cluster as a Ray Job; prints the job id")
    submit.add_argument("--space", required=True, help="space file: a name in spaces/ or a path")
    submit.add_argument("--address", help="the cluster's Jobs API, http://HEAD:8265 "
                        "(default: $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)")
    submit.add_argument("--study", help="study name (default: the space's)")
    submit.add_argument("--studies-dir", help="where the job keeps study folders, on a "
                        "filesystem every node shares (default: the nodes' $FTSEARCH_STUDIES, "
                        "else studies/ in the job's copy of the project, which Ray deletes)")
    submit.add_argument("--trials", type=int, help="trial count, overriding the space's")
    submit.add_argument("--resume", action="store_true", help="continue an existing study")
    submit.add_argument("--quiet", action="store_true", help="a quieter job log")

    jobs = commands.add_parser("jobs", help="list a cluster's search jobs, or follow one")
    jobs.add_argument("action", choices=["list", "status", "logs", "stop"])
    jobs.add_argument("job_id", nargs="?", metavar="JOB_ID", help="as printed by submit")
    jobs.add_argument("--address", help="the cluster's Jobs API, http://HEAD:8265")
    return parser


def version() -> str:
    """The installed package's version (pyproject.toml's, as pip recorded it)."""
    from importlib.metadata import version as installed

    return installed("ftsearch")


def parse_args(argv: list[str]) -> argparse.Namespace:
    # A search is the default: `launcher.py --space x` means `launcher.py run --space x`.
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help", "--version"):
        argv = ["run", *argv]
    return build_parser().parse_args(argv)


def check_study_name(name: str, source: str) -> None:
    """Study names become folder names: no path separators, no '..'."""
    from search.errors import InputError
    from search.storage import is_study_name

    if not is_study_name(name):
        raise InputError(source, "", f"study name {name!r} must be letters, digits, "
                         "'_', '-' or '.', with no path separator or '..'")


def check_trials(trials: int | None) -> None:
    from search.errors import InputError

    if trials is not None and trials <= 0:
        raise InputError("--trials", "", f"must be a positive number, got {trials}")


def run_command(args: argparse.Namespace) -> int:
    from search.runner import SearchRequest, run_search
    from search.space import load_space
    from search.storage import StudyPaths
    from search.summary import save_best, summary_lines

    # The objective's own checks run in run_search, beside Ray's start.
    space = load_space(args.space, objective_checks=False)
    name = args.study or space.study_name
    check_study_name(name, "--study")
    check_trials(args.trials)
    request = SearchRequest(space=space, study_name=name,
                            n_trials=args.trials or space.head.study.n_trials,
                            resume=args.resume, address=args.address, quiet=args.quiet,
                            mlflow=args.mlflow)
    paths = StudyPaths.for_study(name)
    result = run_search(request, paths)
    # Imported only now: its plots' imports (scikit-learn through optuna.importance, about
    # 1.5 s) would otherwise delay Ray's start and the first trial.
    from search.report import write_report

    best = save_best(result.study, space, paths)
    comparisons = compare_after_search(result.storage_url, name)
    write_report(result.storage_url, name, paths.root / "report.html")
    result.mirror.finish(result.study, best.number if best else None,
                         [paths.best, paths.root / "report.html"])
    print("\n".join(summary_lines(result.study, space, paths, result.storage_url)))
    if comparisons:
        print("\n".join(comparisons))
    return 0


def compare_after_search(url: str, name: str) -> list[str]:
    """The comparison lines of the best trial and the untuned default (the study metric's
    last, after its label-metric companion), or why there are none; none without a best
    trial (the summary says so)."""
    from search.comparison import companion, compare, line
    from search.errors import InputError
    from search.storage import resolve_study
    from search.summary import best_trial

    resolved = resolve_study(url, name)
    if len(resolved.study.directions) > 1:
        return front_comparisons(resolved)
    try:
        result = compare(resolved)
    except InputError as error:
        if best_trial(resolved.study) is None:
            return []
        return [f"no comparison with the untuned default: {error.problem}"]
    if result["a"] == result["b"]:
        return [f"the untuned default (trial {result['a']}) is the best trial"]
    lines = [line(result)]
    other = companion(resolved.objective(), result["metric"])
    if other:
        lines.insert(0, line(compare(resolved, metric=other, save=False)))
    return lines


def front_comparisons(resolved) -> list[str]:
    """Each trial of a multi-objective study's Pareto front against the untuned default, on
    the first metric (none written to comparison.json: there is no single winner)."""
    from search.comparison import compare, line
    from search.errors import InputError
    from search.summary import baseline_trial, pareto_front

    baseline = baseline_trial(resolved.study)
    lines = []
    for trial in pareto_front(resolved.study):
        if baseline is not None and trial.number == baseline.number:
            continue
        try:
            lines.append(line(compare(resolved, a=trial.number, save=False)))
        except InputError as error:
            return [f"no comparison with the untuned default: {error.problem}"]
    return lines


def report_command(args: argparse.Namespace) -> int:
    from search.report import write_report
    from search.storage import StudyPaths, resolve_target

    url, name = resolve_target(args.target)
    out = args.out or (StudyPaths.for_study(name).root / "report.html" if name
                       else Path("report.html"))
    print(f"report: {write_report(url, args.study or name, out)}")
    return 0


def dashboard_command(args: argparse.Namespace) -> int:
    from search.dashboard import serve_dashboard
    from search.storage import resolve_target

    url, _ = resolve_target(args.target)
    serve_dashboard(url, args.host, args.port)  # stops on Ctrl-C or SIGTERM
    return 0


def export_command(args: argparse.Namespace) -> int:
    from search.storage import resolve_study

    resolved = resolve_study(args.target, args.study)
    trial = resolved.finished(resolved.trial(args.trial))
    out = Path(args.out) if args.out else resolved.paths.root / "export"
    print("\n".join(resolved.objective().export(trial, out, {"quantize": args.quantize})))
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from search.comparison import compare, line, sheet_rows
    from search.sheet import read_ratings, write_sheet
    from search.storage import resolve_study

    resolved = resolve_study(args.target, args.study)
    b = int(args.b) if args.b is not None and args.b.isdigit() else args.b
    if args.ratings:
        print(read_ratings(args.ratings, key_path(args.ratings)).line())
        return 0
    if args.sheet:
        rows_a, rows_b, labels = sheet_rows(resolved, args.a, b)
        count = write_sheet(rows_a, rows_b, args.sheet, key_path(args.sheet), labels)
        print(f"sheet of {count} test examples to rate: {args.sheet} (key: "
              f"{key_path(args.sheet)}; keep it from the raters)")
        return 0
    print(line(compare(resolved, args.a, b, args.metric, split=args.split)))
    print(f"written to {resolved.paths.root / 'comparison.json'}")
    return 0


def key_path(sheet: Path) -> Path:
    """The key of a sheet, beside it: FILE.key.csv says which answer is which trial's."""
    return sheet.with_name(f"{sheet.stem}.key.csv")


def submit_command(args: argparse.Namespace) -> int:
    from search.cluster import submit

    if args.study:
        check_study_name(args.study, "--study")
    check_trials(args.trials)
    extra = [*(["--trials", str(args.trials)] if args.trials else []),
             *(["--resume"] if args.resume else []), *(["--quiet"] if args.quiet else [])]
    job_id = submit(args.space, args.address, args.study, extra, args.studies_dir)
    print(job_id)  # alone on stdout, for scripts: job=$(launcher.py submit ...)
    where = f" --address {args.address}" if args.address else ""
    print(f"follow it: python launcher.py jobs logs {job_id}{where}", file=sys.stderr)
    return 0


def jobs_command(args: argparse.Namespace) -> int:
    from search.cluster import jobs

    jobs(args.action, args.address, args.job_id)
    return 0


HANDLERS = {"run": run_command, "report": report_command, "dashboard": dashboard_command,
            "export": export_command, "compare": compare_command, "submit": submit_command,
            "jobs": jobs_command}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Imported after parsing so that --help answers at once.
    import optuna

    from objectives.base import DataError
    from search.errors import InputError
    from search.sheet import SheetError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return HANDLERS[args.command](args)
    except (InputError, DataError, SheetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command with --resume to continue", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place that turns any failure into exit 1
        if os.environ.get("FTSEARCH_DEBUG"):
            traceback.print_exc()
        print(f"error: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return 1


def cli() -> int:
    """The command line (``python launcher.py``, ``ftsearch``): ``main``, whose objects are
    then frozen, so that the interpreter's teardown skips their garbage collections (about
    1.2 s after a search, on 2 cores). Exit handlers, Ray's shutdown among them, still run."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(cli())
