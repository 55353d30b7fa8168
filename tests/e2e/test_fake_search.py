"""A second objective end to end: the torch-free fake one searched by the launcher with real
Ray and a real study, then compared with the untuned default, by numbers and by a rated sheet.

The search runs once for the module (it is most of the time); each test reads what it left.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import launcher
from objectives.base import read_predictions
from search.comparison import line
from search.significance import sign_test
from tests.conftest import DATA, load
from tests.fakes import FakeSection, loss, register_fake

pytestmark = pytest.mark.slow  # Ray's start and six trials: about 20 s on two cores

SPACE = DATA / "spaces" / "fake_search.yaml"
LR = "fake.learning_rate"
COMPARISON_KEYS = {"metric", "a", "b", "a_value", "b_value", "difference", "ci_low",
                   "ci_high", "p_value", "n", "test"}


@dataclass
class Search:
    code: int
    out: str
    err: str
    studies: Path

    @property
    def root(self) -> Path:
        return self.studies / "fake"

    def study(self) -> optuna.Study:
        return load(self.studies, "fake")


@pytest.fixture(scope="module")
def search(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Search:
    register_fake()
    studies = tmp_path_factory.mktemp("fake_search") / "studies"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        code = launcher.main(["--space", str(SPACE), "--study", "fake"])
    return Search(code, out.getvalue(), err.getvalue(), studies)


@pytest.fixture
def in_search(search: Search, monkeypatch: pytest.MonkeyPatch) -> Search:
    """Commands of the test find the module's study by name."""
    monkeypatch.setenv("FTSEARCH_STUDIES", str(search.studies))
    return search


def test_search_ends_with_every_trial_complete_pruned_or_failed(search: Search) -> None:
    assert search.code == 0, search.err
    trials = search.study().get_trials()
    assert len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.FAIL}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) >= 2 and pruned, [t.state for t in trials]
    # ASHA (grace 10, rungs at 10 and 30) stops trials only at step 10: at step 30 each trial
    # is at its last evaluation, which is protected.
    for trial in pruned:
        assert trial.user_attrs["prune_reason"] == "stopped early by the scheduler at step 10"
        assert set(trial.intermediate_values) == {10}
    # Finished trials carry the fake objective's exact loss at each evaluation and the
    # test-split figures of their last report.
    for trial in complete:
        fake = FakeSection(learning_rate=trial.params[LR])
        assert trial.intermediate_values == pytest.approx(
            {step: loss(fake, step) for step in (10, 20, 30)})
        assert trial.value == pytest.approx(loss(fake, 30))
        assert trial.user_attrs["test_loss"] == pytest.approx(loss(fake, 30))
        right = round(10 / (1 + loss(fake, 30)))
        assert trial.user_attrs["test_accuracy"] == right / 10
        assert trial.user_attrs["test_confusion_matrix"] == [[0, 0], [10 - right, right]]
        assert trial.user_attrs["config"]["fake"]["learning_rate"] == trial.params[LR]
        assert Path(trial.user_attrs["trial_dir"]) == search.root / "trials" / \
            f"{trial.number:04d}"
        assert trial.user_attrs["node_ip"].startswith("127.")


def test_the_untuned_default_runs_first_and_to_its_end(search: Search) -> None:
    baseline = search.study().trials[0]
    assert baseline.user_attrs["baseline"] is True
    assert baseline.params == {LR: 0.03}  # the space's fixed fake.learning_rate
    assert baseline.state == TrialState.COMPLETE
    assert not any(t.user_attrs.get("baseline") for t in search.study().trials[1:])


def test_the_summary_names_the_best_trial_and_best_is_saved(search: Search) -> None:
    study = search.study()
    best = study.best_trial
    assert best.number != 0 and best.value < study.trials[0].value
    assert f"study 'fake': {sum(t.state == TrialState.COMPLETE for t in study.trials)} " \
        "complete" in search.out
    assert f"best trial {best.number}: eval_loss {best.value:.4f}\n" in search.out
    assert f"    {LR} = {best.params[LR]}\n" in search.out
    assert f"untuned default (trial 0): eval_loss {study.trials[0].value:.4f}; " in search.out
    assert json.loads((search.root / "best" / "trial.json").read_text())["trial"] == best.number
    assert json.loads((search.root / "best" / "weights.json").read_text())["fake"][
        "learning_rate"] == best.params[LR]


def test_the_best_trial_is_compared_with_the_untuned_default(search: Search) -> None:
    result = json.loads((search.root / "comparison.json").read_text())
    assert set(result) >= COMPARISON_KEYS
    best = search.study().best_trial
    assert (result["a"], result["b"]) == (best.number, 0)
    assert (result["metric"], result["test"], result["n"]) == ("test_accuracy",
                                                               "McNemar exact", 10)
    assert result["a_value"] == best.user_attrs["test_accuracy"]
    assert result["b_value"] == search.study().trials[0].user_attrs["test_accuracy"]
    assert result["difference"] == pytest.approx(result["a_value"] - result["b_value"])
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    assert 0 < result["p_value"] <= 1
    # The search prints the comparison after its summary, and the report draws it.
    assert search.out.rstrip("\n").splitlines()[-1] == line(result)
    report = (search.root / "report.html").read_text(encoding="utf-8")
    assert '<section id="comparison">' in report


def test_compare_command_prints_the_comparison(in_search: Search,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["compare", "fake"]) == 0
    captured = capsys.readouterr()
    result = json.loads((in_search.root / "comparison.json").read_text())
    assert captured.out.splitlines() == [
        line(result), f"written to {in_search.root / 'comparison.json'}"]
    assert captured.err == ""


def rate(sheet: Path, rating: dict[bool, str]) -> list[dict[str, str]]:
    """Rate each answer of the sheet by whether it matches the reference."""
    with sheet.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for side in ("1", "2"):
            row[f"rating_{side}"] = rating[row[f"answer_{side}"] == row["reference"]]
    with sheet.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_a_rated_sheet_reads_back_as_ratings_per_trial(
        in_search: Search, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet, key = tmp_path / "s.csv", tmp_path / "s.key.csv"
    assert launcher.main(["compare", "fake", "--sheet", str(sheet)]) == 0
    assert capsys.readouterr().out == (f"sheet of 10 test examples to rate: {sheet} (key: {key}; "
                                       "keep it from the raters)\n")
    rate(sheet, {True: "good", False: "bad"})
    assert launcher.main(["compare", "fake", "--ratings", str(sheet)]) == 0
    # What the ratings must say: each trial's answers against the references.
    result = json.loads((in_search.root / "comparison.json").read_text())
    right = {}
    for side in ("a", "b"):
        rows, _ = read_predictions(in_search.root / "trials" / f"{result[side]:04d}", "test")
        right[side] = [row["prediction"] == row["reference"] for row in rows]
    good = {side: sum(right[side]) for side in right}
    wins = sum(a and not b for a, b in zip(right["a"], right["b"], strict=True))
    losses = sum(b and not a for a, b in zip(right["a"], right["b"], strict=True))
    assert capsys.readouterr().out == (
        f"ratings of 10 rows: a good {good['a']} / acceptable 0 / bad {10 - good['a']}, "
        f"b good {good['b']} / acceptable 0 / bad {10 - good['b']}; a better in {wins}, "
        f"worse in {losses}, tied {10 - wins - losses}; sign test "
        f"p={sign_test(wins, losses):.2g}\n")
    assert wins > losses  # the best trial answers more test examples right


def test_a_sheet_with_an_unknown_rating_is_one_line_exit_2(
        in_search: Search, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "s.csv"
    assert launcher.main(["compare", "fake", "--sheet", str(sheet)]) == 0
    rows = rate(sheet, {True: "good", False: "acceptable"})
    rows[3]["rating_2"] = "great"
    with sheet.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert launcher.main(["compare", "fake", "--ratings", str(sheet)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"error: {sheet}: row 5: column rating_2: unknown rating 'great' "
                            "(allowed: good, acceptable, bad)\n")
