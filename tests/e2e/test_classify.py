"""A search of the classification objective end to end: real Ray, real Optuna storage, real
fine-tunes of the real MiniLM weights, the comparison with the untuned default, the report and
the export of a merged classifier."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest
from optuna.trial import TrialState

import launcher
from tests.conftest import DATA, load

SPACE = DATA / "spaces" / "classify_tiny.yaml"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    studies = tmp_path_factory.mktemp("classify") / "studies"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = launcher.main(["--space", str(SPACE), "--study", "cls", "--quiet"])
    return code, out.getvalue(), err.getvalue(), studies


def test_every_trial_fine_tunes_the_pretrained_minilm(searched):
    code, _, err, studies = searched
    assert code == 0 and err == ""
    trials = load(studies, "cls").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        assert (trial.user_attrs["model_type"], trial.user_attrs["num_hidden_layers"]) == \
            ("bert", 6)
        assert set(trial.user_attrs["test_per_class"]) == {"negative", "neutral", "positive"}
        assert sum(map(sum, trial.user_attrs["test_confusion_matrix"])) == 120


def test_the_best_trial_beats_the_untuned_default_on_both_label_metrics(searched):
    _, out, _, studies = searched
    study = load(studies, "cls")
    baseline, best = study.trials[0], study.best_trial
    assert baseline.user_attrs["baseline"] and best.number != 0
    assert best.params["training.learning_rate"] == pytest.approx(5e-3)
    assert best.user_attrs["test_accuracy"] > 0.85 > 0.6 > baseline.user_attrs["test_accuracy"]
    macro_f1, accuracy = out.splitlines()[-2:]
    assert macro_f1.startswith(f"best trial {best.number} vs untuned default: test macro_f1 ")
    assert accuracy.startswith(f"best trial {best.number} vs untuned default: test accuracy ")
    assert "McNemar exact p<0.001, n=120" in accuracy
    assert "data: 1200 rows -> 1200; labels 1.1 : 1 in train" in out.splitlines()
    assert "paired permutation p<0.001, n=120" in macro_f1
    comparison = json.loads((studies / "cls" / "comparison.json").read_text())
    assert comparison["metric"] == "test_accuracy"


def test_the_report_shows_the_best_trials_classes(searched):
    report = (searched[3] / "cls" / "report.html").read_text()
    assert '<section id="classes">' in report and "true class" in report
    assert '<section id="data">' in report


def test_export_writes_a_merged_classifier_and_no_modelfile(searched, monkeypatch, capsys):
    studies = searched[3]
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    assert launcher.main(["export", "cls"]) == 0
    out = capsys.readouterr().out
    assert "not Ollama" in out
    export = studies / "cls" / "export"
    assert (export / "model.safetensors").is_file() and not (export / "Modelfile").exists()
    assert json.loads((export / "export.json").read_text())["passed"] is True
    assert launcher.main(["export", "cls", "--quantize", "q8_0"]) == 2
    assert "quantisation is for GGUF" in capsys.readouterr().err
