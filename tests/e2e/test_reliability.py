"""A search survives failing trials, dead workers and a killed driver, and loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

import launcher
from objectives import OBJECTIVES
from tests.conftest import DATA, REPO, TINY_SPACE, load

pytestmark = pytest.mark.usefixtures("local_ray")


def test_out_of_memory_is_retried_with_half_the_batch_and_nan_is_pruned(
    studies_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(OBJECTIVES, "oom_lora", "tests.oom_objective:OomLoRA")
    space = DATA / "spaces" / "reliability.yaml"
    assert launcher.main(["--space", str(space), "--study", "rel"]) == 0
    trials = load(studies_dir, "rel").trials
    # The grid's two points, each run out of memory and retried once; a retried trial is
    # replaced by its retry in the count, so none is left waiting.
    assert len(trials) == 4
    originals = [t for t in trials if "retry_of" not in t.user_attrs]
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    for trial in originals:
        # Out of memory: FAIL with the reason, and linked to its retry.
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["fail_reason"].startswith("OutOfMemoryError: CUDA out of memory")
        retry = retries[trial.number]
        assert trial.user_attrs["retried_as"] == retry.number
        # The same params, half the per-device batch, twice the accumulation.
        assert retry.params == trial.params
        assert retry.user_attrs["overrides"] == {
            "training.per_device_train_batch_size": 4, "training.gradient_accumulation_steps": 2}
        assert retry.user_attrs["config"]["training"]["per_device_train_batch_size"] == 4
        if trial.params["training.learning_rate"] > 1:
            # A diverging loss stops the trial at once: PRUNED with the reason.
            assert retry.state == TrialState.PRUNED
            assert "training loss became" in retry.user_attrs["prune_reason"]
        else:
            assert retry.state == TrialState.COMPLETE and retry.value < 5


def run_in_thread(args: list[str]) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(launcher.main(args)), daemon=True)
    thread.start()
    return thread, codes


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_killed_worker_is_restarted_and_resumes_from_its_checkpoint(
    studies_dir: Path, tmp_path: Path
) -> None:
    space = tmp_path / "long.yaml"
    text = TINY_SPACE.read_text().replace("../../../data", str(REPO / "data"))
    space.write_text(text.replace("max_steps: 30", "max_steps: 80").replace(
        "n_trials: 5", "n_trials: 1").replace("name: asha", "name: none"))
    thread, codes = run_in_thread(["--space", str(space), "--study", "kill"])
    trial_dir = studies_dir / "kill" / "trials" / "0000"
    wait_for(lambda: (trial_dir / "checkpoints" / "checkpoint-20").is_dir(), 120,
             "the trial's second checkpoint")
    pid = json.loads((trial_dir / "worker.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert codes == [0]
    trial = load(studies_dir, "kill").trials[0]
    assert trial.state == TrialState.COMPLETE
    steps = [json.loads(line)["step"] for line in (trial_dir / "metrics.jsonl").open()]
    new_pid = json.loads((trial_dir / "worker.json").read_text())["pid"]
    assert new_pid != pid  # a fresh worker finished it
    # It resumed from a checkpoint instead of starting over: step 10 ran once.
    assert steps.count(10) == 1 and steps[-1] == 80
    assert trial.intermediate_values.keys() == {10, 20, 30, 40, 50, 60, 70, 80}


def study_exists(db: Path, name: str) -> bool:
    """Read only: Optuna's storage would create the schema if it opened the file while the
    driver is still creating it, and the two would collide."""
    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        try:
            found = connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,))
            return found.fetchone() is not None
        except sqlite3.OperationalError:  # no tables yet, or the driver holds the lock
            return False


def test_driver_killed_mid_search_resumes_with_nothing_lost(studies_dir: Path,
                                                            tmp_path: Path) -> None:
    space = tmp_path / "driver.yaml"
    text = TINY_SPACE.read_text().replace("../../../data", str(REPO / "data"))
    space.write_text(text.replace("max_steps: 30", "max_steps: 60"))
    env = {**os.environ, "FTSEARCH_STUDIES": str(studies_dir)}
    driver = subprocess.Popen(
        [sys.executable, "launcher.py", "--space", str(space), "--study", "crash"], cwd=REPO,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def two_finished_one_running() -> bool:
            if not study_exists(studies_dir / "crash" / "optuna.db", "crash"):
                return False
            states = [t.state for t in load(studies_dir, "crash").trials]
            return states.count(TrialState.RUNNING) == 1 and len(states) >= 3
        wait_for(two_finished_one_running, 240, "two finished trials and a running one")
        before = {t.number: t for t in load(studies_dir, "crash").trials
                  if t.state.is_finished()}
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
        driver.wait()

    assert launcher.main(["--space", str(space), "--study", "crash", "--resume"]) == 0
    after = load(studies_dir, "crash").trials
    # Every trial that had finished is there unchanged, with its intermediate values.
    for number, old in before.items():
        new = after[number]
        assert (new.state, new.value, new.params, new.intermediate_values) == \
            (old.state, old.value, old.params, old.intermediate_values)
    interrupted = [t for t in after if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == 1
    # The search reached its count, and no number was used twice.
    assert len(after) - len(interrupted) == 5
    assert [t.number for t in after] == list(range(len(after)))
    assert all(t.state.is_finished() for t in after)
