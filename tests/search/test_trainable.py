"""What a trial leaves behind: its reports (TrialContext), its folder, and how an error is
summarised; run_trial with Ray's tune.report swapped for a Recorder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

import search.trainable
from objectives.base import TrialContext
from search.outcome import ERROR_FILE, outcome
from search.space import load_space
from search.storage import StudyPaths
from search.trainable import error_summary, is_out_of_memory, run_trial
from tests.conftest import DATA
from tests.fakes import OutOfMemoryError, Recorder, register_fake

OOM_SPACE = DATA / "spaces" / "fake_oom.yaml"


def context_in(folder: Path, metric: str = "eval_loss",
               direction: str = "minimize") -> tuple[TrialContext, Recorder]:
    folder.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    context = TrialContext(number=2, trial_dir=folder, prepared_dir=folder / "prepared",
                           reporter=recorder, metric=metric, direction=direction)
    return context, recorder


def written(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# --- error_summary and is_out_of_memory


def test_error_summary_is_the_type_and_the_first_line() -> None:
    assert error_summary(ValueError("bad value\n  at line 3")) == "ValueError: bad value"
    assert error_summary(ValueError("\n  indented first line\nsecond")) == \
        "ValueError: indented first line"
    assert error_summary(KeyError("x")) == "KeyError: 'x'"
    assert error_summary(RuntimeError()) == "RuntimeError: "
    assert error_summary(OutOfMemoryError("CUDA out of memory (fake)")) == \
        "OutOfMemoryError: CUDA out of memory (fake)"


def test_error_summary_is_at_most_500_characters() -> None:
    summary = error_summary(ValueError("x" * 2000))
    assert len(summary) == 500 and summary.startswith("ValueError: xxx")


def test_out_of_memory_is_known_by_the_error_types_name_or_as_memory_error() -> None:
    class OutOfMemoryErrorOfAnotherLibrary(Exception):
        pass

    assert is_out_of_memory(OutOfMemoryError("CUDA out of memory"))  # named as torch.cuda's
    assert is_out_of_memory(type("OutOfMemoryError", (RuntimeError,), {})())
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(type("HostMemory", (MemoryError,), {})())
    # The message alone does not make an error an out-of-memory one.
    assert not is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(OutOfMemoryErrorOfAnotherLibrary())
    assert not is_out_of_memory(ValueError("the fake objective was asked to raise"))


# --- TrialContext


def test_report_writes_each_evaluation_and_hands_it_on(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "0002")
    context.report({"step": 10, "eval_loss": 2.5, "eval_accuracy": 0.25, "last_evaluation": False,
                    "note": "ok", "per_layer": [1, 2], "extra": {"a": 1}, "none": None})
    context.report({"step": 20, "eval_loss": math.nan})
    first = {"step": 10, "eval_loss": 2.5, "eval_accuracy": 0.25, "last_evaluation": False,
             "note": "ok"}
    # Only scalars travel: lists, mappings and None are dropped, everywhere alike.
    assert recorder.results[0] == first
    assert written(tmp_path / "0002")[0] == first
    assert math.isnan(written(tmp_path / "0002")[1]["eval_loss"])
    assert context.history == recorder.results
    assert len(recorder.results) == 2


def test_complete_reports_the_value_under_the_study_metric(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "t")
    context.report({"step": 30, "eval_loss": 0.6})
    context.complete(0.5, step=30, test_loss=0.55, test_accuracy=0.9)
    assert recorder.results[-1] == {"test_loss": 0.55, "test_accuracy": 0.9, "eval_loss": 0.5,
                                    "step": 30, "outcome": "complete"}
    assert written(tmp_path / "t")[-1] == recorder.results[-1]
    ended = outcome(recorder.results[-1], False, "eval_loss")
    assert (ended.state, ended.value) == (TrialState.COMPLETE, 0.5)


def test_complete_with_another_study_metric(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "t", metric="eval_accuracy",
                                   direction="maximize")
    assert context.maximize
    context.complete(0.75, step=20)
    assert recorder.results[-1] == {"eval_accuracy": 0.75, "step": 20, "outcome": "complete"}
    assert outcome(recorder.results[-1], False, "eval_accuracy").value == 0.75


def test_prune_reports_nan_and_the_reason(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "t")
    assert not context.maximize
    context.prune("training loss became nan at step 7", step=7)
    last = recorder.results[-1]
    assert set(last) == {"step", "eval_loss", "outcome", "reason"}
    assert (last["step"], last["outcome"], last["reason"]) == (
        7, "pruned", "training loss became nan at step 7")
    assert math.isnan(last["eval_loss"])
    ended = outcome(last, False, "eval_loss")
    assert (ended.state, ended.reason) == (TrialState.PRUNED,
                                           "training loss became nan at step 7")


def test_fail_reports_at_the_last_step_reached(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "t")
    context.report({"step": 20, "eval_loss": 1.0})
    context.fail("OutOfMemoryError: CUDA out of memory", out_of_memory=True)
    last = recorder.results[-1]
    assert set(last) == {"step", "eval_loss", "outcome", "reason", "out_of_memory"}
    assert (last["step"], last["outcome"], last["reason"], last["out_of_memory"]) == (
        20, "failed", "OutOfMemoryError: CUDA out of memory", True)
    assert math.isnan(last["eval_loss"])
    ended = outcome(last, False, "eval_loss")
    assert (ended.state, ended.reason, ended.out_of_memory) == (
        TrialState.FAIL, "OutOfMemoryError: CUDA out of memory", True)


def test_fail_before_any_evaluation_is_at_step_zero(tmp_path: Path) -> None:
    context, recorder = context_in(tmp_path / "t")
    context.fail("ValueError: nope")
    assert len(recorder.results) == 1 and len(written(tmp_path / "t")) == 1
    last = recorder.results[0]
    assert math.isnan(last["eval_loss"]) and math.isnan(written(tmp_path / "t")[0]["eval_loss"])
    assert (last["step"], last["out_of_memory"], last["reason"]) == (0, False, "ValueError: nope")
    assert outcome(recorder.results[0], False, "eval_loss").state == TrialState.FAIL


# --- run_trial, with tune.report replaced by a Recorder


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    register_fake()
    recorder = Recorder()
    monkeypatch.setattr(search.trainable.TuneReporter, "report",
                        lambda self, metrics: recorder.report(metrics))
    return recorder


def test_run_trial_that_runs_out_of_memory_fails_with_the_flag_and_a_traceback(
        tmp_path: Path, reports: Recorder) -> None:
    space = load_space(str(OOM_SPACE))
    paths = StudyPaths(tmp_path / "fake")
    run_trial({"trial_number": 3, "params": {"fake.learning_rate": 0.02}, "overrides": {}},
              space, paths)
    folder = paths.trial_dir(3)
    assert len(reports.results) == 1
    last = dict(reports.results[0])
    assert math.isnan(last.pop("eval_loss"))
    assert last == {"step": 0, "outcome": "failed", "out_of_memory": True,
                    "reason": "OutOfMemoryError: CUDA out of memory (fake)"}
    assert "OutOfMemoryError: CUDA out of memory (fake)" in (folder / ERROR_FILE).read_text()
    assert "Traceback" in (folder / ERROR_FILE).read_text()
    assert json.loads((folder / "worker.json").read_text())["pid"] == os.getpid()
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["trial"] == 3 and config["params"] == {"fake.learning_rate": 0.02}
    assert config["fake"]["learning_rate"] == 0.02 and config["fake"]["batch_size"] == 8


def test_run_trial_retried_with_its_overrides_completes_and_clears_the_old_error(
        tmp_path: Path, reports: Recorder) -> None:
    space = load_space(str(OOM_SPACE))
    paths = StudyPaths(tmp_path / "fake")
    paths.trial_dir(4).mkdir(parents=True)
    (paths.trial_dir(4) / ERROR_FILE).write_text("from an earlier attempt")
    run_trial({"trial_number": 4, "params": {"fake.learning_rate": 0.01},
               "overrides": {"fake.batch_size": 4}}, space, paths)
    folder = paths.trial_dir(4)
    assert not (folder / ERROR_FILE).exists()
    assert [r["step"] for r in reports.results] == [10, 20, 30, 30]
    assert [r.get("last_evaluation") for r in reports.results] == [False, False, True, None]
    assert reports.results[-1]["outcome"] == "complete"
    assert reports.results[-1]["eval_loss"] == pytest.approx(1 / 30)
    assert written(folder) == reports.results
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["overrides"] == {"fake.batch_size": 4} and config["fake"]["batch_size"] == 4
