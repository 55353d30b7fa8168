"""A two-objective search end to end (the loss against the latency): real Ray, real Optuna
storage, real fine-tune steps of the embedded model, ASHA stopping on the first metric."""

from __future__ import annotations

import json

import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

import launcher
from search.report import render
from tests.conftest import DATA, load, quiet_main

SPACE = DATA / "spaces" / "multi_tiny.yaml"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    studies = tmp_path_factory.mktemp("multi") / "studies"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        code, out, err = quiet_main(["--space", str(SPACE), "--quiet"])
    return code, out, err, studies


def test_both_values_are_recorded_and_the_learning_curves_kept(searched):
    code, _, err, studies = searched
    assert code == 0 and err == ""
    study = load(studies, "multi_tiny")
    assert study.directions == [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["eval_loss", "latency_ms"]
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                      TrialState.PRUNED]
    for trial in study.trials[:2]:
        loss, latency = trial.values
        curve = trial.intermediate_values
        # The curve is the first metric by step; the value its best (the kept checkpoint).
        assert loss == pytest.approx(min(curve.values()), abs=1e-6)
        assert latency > 0 and trial.user_attrs["total_params"] > \
            trial.user_attrs["trainable_params"] > 0
    assert sorted(study.trials[0].intermediate_values) == [10, 20, 30]
    assert sorted(study.trials[1].intermediate_values) == [15, 30]


def test_pruned_trials_carry_their_curves_and_the_reason(searched):
    _, _, _, studies = searched
    pruned = [t for t in load(studies, "multi_tiny").trials if t.state == TrialState.PRUNED]
    for trial, step in zip(pruned, (10, 15), strict=True):
        assert trial.values is None
        assert list(trial.intermediate_values) == [step]
        assert trial.intermediate_values[step] > 5  # 1e-5 has hardly learnt: stopped on it
        assert trial.user_attrs["prune_reason"] == \
            f"stopped early by the scheduler at step {step}"


def test_the_summary_best_folder_and_report_show_the_pareto_front(searched):
    _, out, _, studies = searched
    study = load(studies, "multi_tiny")
    front = sorted(t.number for t in study.best_trials)
    assert front and set(front) <= {0, 1}
    assert f"Pareto front of {len(front)} trials (eval_loss lower, latency_ms lower is " \
        "better" in out
    for number in front:
        trial = study.trials[number]
        assert f"  trial {number} (front" in out
        assert f"eval_loss {trial.values[0]:.4f}, latency_ms {trial.values[1]:.4f}" in out
        assert (studies / "multi_tiny" / "best" / f"trial_{number}" /
                "adapter_model.safetensors").is_file()
    saved = json.loads((studies / "multi_tiny" / "best" / "front.json").read_text())
    assert [row["trial"] for row in saved["front"]] == front
    assert saved["front"][0]["values"]["latency_ms"] == study.trials[front[0]].values[1]
    page = render(study, f"sqlite:///{studies / 'multi_tiny' / 'optuna.db'}")
    assert 'id="pareto"' in page and "latency_ms" in page


def test_export_and_compare_ask_for_a_trial_of_the_front(searched, capsys, monkeypatch):
    _, _, _, studies = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    front = sorted(t.number for t in load(studies, "multi_tiny").best_trials)
    assert launcher.main(["export", "multi_tiny"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --trial: study 'multi_tiny' has several objectives and no single "
                   f"best trial; choose one of its Pareto front ({', '.join(map(str, front))})\n")
    assert launcher.main(["compare", "multi_tiny", "--trial", "1", "--b", "0"]) == 0
    assert capsys.readouterr().out.startswith("trial 1 vs untuned default: test ")
