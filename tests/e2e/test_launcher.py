"""The launcher end to end: real Ray, real Optuna storage, real fine-tune steps."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from optuna.trial import TrialState

import launcher
from search.heartbeat import HEARTBEAT, STALE_AFTER_S
from tests.conftest import DATA, REPO, TINY_SPACE, load

BAD_SPACES = sorted((DATA / "bad_spaces").glob("*.yaml"))


def tiny_variant(dest: Path, old: str, new: str) -> Path:
    """A copy of the tiny space elsewhere, with one text change."""
    text = TINY_SPACE.read_text().replace("../../../data", str(REPO / "data"))
    assert old in text
    dest.write_text(text.replace(old, new, 1))
    return dest


def expected_message(path: Path) -> str:
    """Each bad space's first line reads '# expect: <part of the error message>'."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} has no '# expect:' line"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("space", BAD_SPACES, ids=[p.stem for p in BAD_SPACES])
def test_bad_space_is_one_line_exit_2_and_creates_nothing(space, studies_dir, capsys):
    code = launcher.main(["--space", str(space)])
    err = capsys.readouterr().err
    assert code == 2
    # One line, naming the file and the problem, no traceback.
    assert err.count("\n") == 1 and "Traceback" not in err
    # The space file, or for bad data the dataset file, is named.
    assert err.startswith((f"error: {space}: ", f"error: {DATA}")) \
        or re.match(r"error: \S+\.(jsonl|csv): ", err)  # a data file that is not there
    assert expected_message(space) in err
    assert not studies_dir.exists()


def test_bad_space_corpus_is_large_enough():
    # Each file is a distinct bad input; the issue asks for at least 30.
    assert len(BAD_SPACES) >= 30


def test_missing_space_file_and_bad_flags(capsys, studies_dir):
    assert launcher.main(["--space", "no_such_space.yaml"]) == 2
    assert "no_such_space.yaml: no such space file" in capsys.readouterr().err
    assert launcher.main(["--space", str(TINY_SPACE), "--trials", "0"]) == 2
    assert "--trials: must be a positive number" in capsys.readouterr().err
    assert launcher.main(["--space", str(TINY_SPACE), "--study", "../x"]) == 2
    assert "no path separator" in capsys.readouterr().err
    assert not studies_dir.exists()


# The launcher as a script, and as the command `pip install .` puts beside the interpreter.
INSTALLED = Path(sys.executable).with_name("ftsearch")
COMMAND_LINES = {"launcher.py": [sys.executable, "launcher.py"], "ftsearch": [str(INSTALLED)]}


@pytest.mark.parametrize("command", COMMAND_LINES)
def test_bad_space_in_a_fresh_process_prints_no_traceback(studies_dir, command):
    bad = DATA / "bad_spaces" / "unknown_key.yaml"
    run = subprocess.run([*COMMAND_LINES[command], "--space", str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {bad}: training.learnin_rate: unknown key (did you mean 'learning_rate'?)"]


FROZEN_AT_EXIT = """
import atexit, gc, sys
import launcher
atexit.register(lambda: print(gc.get_freeze_count()))
sys.argv[1:] = ["report", "no_such_study"]
sys.exit(launcher.cli())
"""


def test_the_command_line_ends_without_collecting_its_garbage(studies_dir):
    """Its work done, its objects are frozen: the garbage collections of the interpreter's
    teardown took about 1.2 s after a search. Its exit code is main's."""
    run = subprocess.run([sys.executable, "-c", FROZEN_AT_EXIT], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert int(run.stdout.split()[-1]) > 0


def test_the_installed_command_says_its_version():
    assert INSTALLED.is_file(), "pip install . installs the ftsearch command"
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(),
                        re.MULTILINE).group(1)
    for command in COMMAND_LINES.values():
        run = subprocess.run([*command, "--version"], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
        assert (run.returncode, run.stdout, run.stderr) == (0, f"ftsearch {version}\n", "")
    usage = subprocess.run([str(INSTALLED), "compare", "--help"], capture_output=True,
                           text=True, timeout=60)
    assert usage.stdout.startswith("usage: ftsearch compare ")


def test_more_gpus_than_the_cluster_has_is_refused(local_ray, studies_dir, tmp_path, capsys):
    space = tiny_variant(tmp_path / "gpu.yaml", "study:\n", "resources: {gpu: 4}\nstudy:\n")
    assert launcher.main(["--space", str(space)]) == 2
    assert "resources.gpu: each trial asks for 4 GPUs but the cluster has 0" in \
        capsys.readouterr().err
    assert not studies_dir.exists()


WHOLE_SEARCH = """
import json, sys
import launcher
import search.runner
before_ray = []
start_ray = search.runner.start_ray
def recording(request):
    before_ray.extend(m for m in ("sklearn", "plotly") if m in sys.modules)
    return start_ray(request)
search.runner.start_ray = recording
code = launcher.main(sys.argv[1:])
from ray._common.usage import usage_lib
print(json.dumps([code, sorted(m for m in ("torch", "transformers", "datasets", "peft", "mlflow",
                                           "wandb") if m in sys.modules), before_ray,
                  usage_lib._recorded_extra_usage_tags.get("air_callbacks")]))
"""


def test_the_launcher_runs_a_whole_search_without_the_training_libraries(tmp_path):
    # Its workers train; it checks, compares and reports: torch and transformers, about
    # 250 MB, are never loaded in it (the checks and the data run in a process of their own).
    # The report's plotting libraries are loaded after the search, not before Ray starts.
    # Ray Tune records the search's callbacks (all ftsearch's own) in its usage telemetry
    # without importing mlflow and wandb to tell them from its tracking integrations.
    run = subprocess.run([sys.executable, "-c", WHOLE_SEARCH, "--space", str(TINY_SPACE),
                          "--study", "lean", "--trials", "1", "--quiet"], cwd=REPO,
                         env={**os.environ, "FTSEARCH_STUDIES": str(tmp_path)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == [0, [], [], '{"CustomCallback": 3}']
    assert load(tmp_path, "lean").trials[0].state == TrialState.COMPLETE
    assert (tmp_path / "lean" / "report.html").exists()


def test_search_records_complete_pruned_and_failed_trials_and_resumes(
    local_ray, studies_dir, capsys
):
    # A first run stops after 2 of the space's 5 trials, as if interrupted.
    assert launcher.main(["--space", str(TINY_SPACE), "--study", "tiny", "--trials", "2"]) == 0
    study = load(studies_dir, "tiny")
    assert len(study.trials) == 2

    # Every Ray node of the local search is on a loopback address.
    assert all(node["NodeManagerAddress"].startswith("127.") for node in ray.nodes())

    # A trial left RUNNING by a launcher that died long ago (its heartbeat is old) is failed
    # as interrupted, then made up for.
    study.ask().set_user_attr(HEARTBEAT, time.time() - STALE_AFTER_S - 1)
    assert launcher.main(["--space", str(TINY_SPACE), "--study", "tiny"]) == 2
    assert "add --resume" in capsys.readouterr().err
    assert launcher.main(["--space", str(TINY_SPACE), "--study", "tiny", "--resume"]) == 0
    out = capsys.readouterr().out

    study = load(studies_dir, "tiny")
    trials = study.trials
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    interrupted = [t for t in by_state[TrialState.FAIL]
                   if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == 1
    # The trial count is reached by trials that ran, with no number reused.
    assert len(trials) - len(interrupted) == 5
    assert sorted(t.number for t in trials) == list(range(len(trials)))

    # The untuned baseline ran first.
    assert trials[0].user_attrs["baseline"] is True
    assert trials[0].params["training.learning_rate"] == pytest.approx(1e-2)

    # Each trial records the loopback node it ran on.
    assert all(t.user_attrs["node_ip"].startswith("127.") for t in trials if t not in interrupted)

    # Completed trials carry values and intermediate values at the evaluation steps.
    complete = by_state[TrialState.COMPLETE]
    assert len(complete) >= 2
    for trial in complete:
        assert trial.value is not None and trial.value < 5
        assert set(trial.intermediate_values) == {10, 20, 30}
        assert Path(trial.user_attrs["trial_dir"], "adapter", "adapter_config.json").is_file()

    # The slow learner is stopped by ASHA at its first rung: PRUNED with its values.
    pruned = by_state[TrialState.PRUNED]
    assert [t.params["training.learning_rate"] for t in pruned] == [pytest.approx(1e-5)]
    assert pruned[0].intermediate_values and max(pruned[0].intermediate_values) <= 20
    assert "stopped early by the scheduler" in pruned[0].user_attrs["prune_reason"]

    # Trials that raise are FAIL with the error's one-line summary.
    failed = [t for t in by_state[TrialState.FAIL] if t not in interrupted]
    assert len(failed) == 2
    for trial in failed:
        assert trial.params["lora.target_modules"] == "no_such_proj"
        reason = trial.user_attrs["fail_reason"]
        assert reason.startswith("NoMatchingPeftModuleError: Target modules")

    # Each trial folder holds the resolved config; the winner is copied to best/.
    assert (Path(complete[0].user_attrs["trial_dir"]) / "config.yaml").is_file()
    best = studies_dir / "tiny" / "best"
    assert (best / "adapter_model.safetensors").is_file() and (best / "trial.json").is_file()
    assert f"best trial {study.best_trial.number}" in out
    assert "open the study: python launcher.py dashboard tiny" in out
    assert (studies_dir / "tiny" / "report.html").is_file()

    # Another space may not add its trials to this study, even with --resume, and bad input
    # leaves the study's file exactly as it was.
    db = studies_dir / "tiny" / "optuna.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    other = tiny_variant(studies_dir.parent / "other.yaml", "r: 4", "r: 2")
    assert launcher.main(["--space", str(other), "--study", "tiny", "--resume"]) == 2
    assert "was made by another space" in capsys.readouterr().err
    bad = DATA / "bad_spaces" / "low_not_below_high.yaml"
    assert launcher.main(["--space", str(bad), "--study", "tiny", "--resume"]) == 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
