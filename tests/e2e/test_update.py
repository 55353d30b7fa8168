"""A second search that continues the first: every trial starts from the first study's best
adapter (its learning rate scaled), and the first study's trials warm-start the sampler.
Real Ray, real Optuna storage, real fine-tune steps of the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

import launcher
from objectives.adapter import adapter_folder
from objectives.causal_lm_lora import CausalLMLoRA
from objectives.causal_lm_lora.config import CausalLMConfig
from objectives.causal_lm_lora.recipe import load_base_model
from objectives.trainer import forget_base_model, with_lora
from search.heartbeat import finished_count
from search.history import QUEUED_FROM, WARM_START
from search.space import load_space
from tests.conftest import REPO, load, quiet_main

FIRST = """study: {n_trials: 3, max_concurrent_trials: 1, seed: 0}
sampler: {name: random}
scheduler: {name: none}
data: {path: OLD, max_length: 64}
training: {learning_rate: 1.0e-2, per_device_train_batch_size: 8, max_steps: 20, eval_steps: 10,
           per_device_eval_batch_size: 64}
lora: {r: 4, lora_alpha: 8, target_modules: all-linear}
search:
  training.learning_rate: {type: float, low: 3.0e-3, high: 3.0e-2, log: true}
"""
UPDATE = """study: {n_trials: 2, max_concurrent_trials: 1, seed: 1, warm_start: first,
        warm_start_top_k: 1}
sampler: {name: tpe, options: {n_startup_trials: 1}}
scheduler: {name: none}
model: {adapter: first}
data: {path: NEW, max_length: 64, replay: {path: first, fraction: 0.5}}
training: {learning_rate_scale: 0.3, per_device_train_batch_size: 8, max_steps: 20,
           eval_steps: 10, per_device_eval_batch_size: 64}
search:
  training.learning_rate: {type: float, low: 3.0e-3, high: 3.0e-2, log: true}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    data = REPO / "data"
    path.write_text(text.replace("OLD", str(data / "finance_sentiment_old.jsonl"))
                    .replace("NEW", str(data / "finance_sentiment_new.jsonl")))
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    folder = tmp_path_factory.mktemp("update")
    studies = folder / "studies"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        first = quiet_main(["--space", str(write(folder, "first", FIRST)), "--quiet"])
        assert first[0] == 0, first
        update = quiet_main(["--space", str(write(folder, "update", UPDATE)), "--quiet"])
    return update, studies, folder


def test_the_update_continues_the_best_adapter_at_a_scaled_learning_rate(searched):
    (code, out, err), studies, _ = searched
    assert code == 0 and err == ""
    best = load(studies, "first").best_trial
    update = load(studies, "update")
    baseline = update.trials[0]
    config = baseline.user_attrs["config"]
    assert config["model"]["adapter"] == str(studies / "first" / "trials" / f"{best.number:04d}")
    earlier_rate = best.user_attrs["config"]["training"]["learning_rate"]
    assert config["training"]["learning_rate"] == pytest.approx(0.3 * earlier_rate)
    assert config["lora"]["r"] == 4 and config["lora"]["lora_alpha"] == 8  # the adapter's
    assert "warm start from study 'first': 3 of its finished trials" in out


def test_the_first_studys_trials_are_in_the_history_and_not_counted(searched):
    _, studies, _ = searched
    update = load(studies, "update")
    added = [t for t in update.trials if WARM_START in t.user_attrs]
    assert [t.user_attrs[WARM_START] for t in added] == ["first:0", "first:1", "first:2"]
    own = [t for t in update.trials if WARM_START not in t.user_attrs]
    assert len(own) == 2 and finished_count(update) == 2
    assert all(t.state == TrialState.COMPLETE for t in own)
    queued = [t for t in own if QUEUED_FROM in t.user_attrs]
    first = load(studies, "first")
    ranked = sorted((t for t in first.trials if not t.user_attrs.get("baseline")),
                    key=lambda t: t.value)
    assert [t.user_attrs[QUEUED_FROM] for t in queued] == [f"first:{ranked[0].number}"]


def test_every_update_trial_reports_the_old_task_too(searched):
    (_, out, _), studies, _ = searched
    first = load(studies, "first")
    best = first.best_trial
    # The old data's validation and test splits are the first study's own.
    first_test = (studies / "first" / "trials" / f"{best.number:04d}" /
                  "predictions_test.jsonl").read_text().splitlines()
    for trial in load(studies, "update").trials:
        if WARM_START in trial.user_attrs:
            continue
        attrs = trial.user_attrs
        for key in ("old_eval_loss", "old_eval_accuracy", "old_test_loss", "old_test_accuracy",
                    "test_accuracy"):
            assert 0 <= attrs[key] < 100, key
        folder = studies / "update" / "trials" / f"{trial.number:04d}"
        old_test = (folder / "predictions_old_test.jsonl").read_text().splitlines()
        assert [json.loads(row)["reference"] for row in old_test] == \
            [json.loads(row)["reference"] for row in first_test]
        assert [json.loads(row)["prompt"] for row in old_test] == \
            [json.loads(row)["prompt"] for row in first_test]
    report = json.loads((studies / "update" / "data_report.json").read_text())
    done = report["replay"]
    # Half of the mixed training split is old (as many old examples as new ones).
    assert done["old_examples"] == done["new_examples"] > 0
    assert "replay: " in report["summary"] and report["summary"] in out


def test_a_continued_trial_starts_from_the_saved_adapter_weights(searched):
    _, studies, _ = searched
    best = load(studies, "first").best_trial
    folder = adapter_folder(studies / "first" / "trials" / f"{best.number:04d}")
    saved = load_file(folder / "adapter_model.safetensors")
    config = CausalLMConfig.model_validate(load(studies, "update").trials[0].user_attrs["config"])
    forget_base_model()
    model = with_lora(load_base_model(config), "CAUSAL_LM", config.lora, adapter=folder)
    weights = {name: p for name, p in model.named_parameters() if "lora_" in name}
    assert len(weights) == len(saved) > 0
    for name, tensor in saved.items():
        live = name.replace(".weight", ".default.weight")
        assert torch.equal(weights[live].detach(), tensor), name
    assert all(p.requires_grad for p in weights.values())
    model.unload()


def test_a_searched_lora_shape_with_an_adapter_is_refused_in_one_line(searched, monkeypatch,
                                                                      capsys):
    _, studies, folder = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    space = write(folder, "reshape", UPDATE.replace("warm_start: first,", "warm_start: [],")
                  + "  lora.r: {type: categorical, choices: [4, 8]}\n")
    assert launcher.main(["--space", str(space), "--study", "reshape"]) == 2
    assert capsys.readouterr().err == (
        f"error: {space}: search.lora.r: value 8: 8 differs from the adapter's 4 "
        "(model.adapter): a continued adapter keeps its shape; leave lora.r out of the space\n")
    assert not (studies / "reshape").exists()


def test_the_shipped_update_space_validates_once_its_first_month_exists(searched, monkeypatch):
    _, studies, folder = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    text = (REPO / "spaces" / "monthly_update.yaml").read_text()
    assert "adapter: monthly_first" in text and "path: monthly_first" in text
    copy = folder / "monthly_update.yaml"
    copy.write_text(text.replace("monthly_first", "first")
                    .replace("../data/", f"{REPO / 'data'}/"))
    space = load_space(str(copy))
    best = load(studies, "first").best_trial
    trial_dir = str(studies / "first" / "trials" / f"{best.number:04d}")
    assert space.defaults.model.adapter == space.defaults.data.replay.path == trial_dir
    assert space.defaults.lora.r == 4  # the adapter's, not the section's default 8
    rate = best.user_attrs["config"]["training"]["learning_rate"]
    assert space.defaults.training.learning_rate == pytest.approx(0.3 * rate)
    assert space.head.study.warm_start == ["first"]


def test_the_two_winners_compare_on_the_old_test_split(searched, monkeypatch, capsys):
    _, studies, _ = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    first = load(studies, "first").best_trial.number
    assert launcher.main(["compare", "update", "--b", "first", "--split", "old_test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"best trial {load(studies, 'update').best_trial.number} vs study "
                          f"'first' trial {first}: old_test accuracy ")



def test_the_two_winners_compare_on_the_new_test_split(searched, monkeypatch, capsys):
    # The first study's winner never saw the new test split: its adapter answers it, once.
    _, studies, _ = searched
    monkeypatch.setenv("FTSEARCH_STUDIES", str(studies))
    first, update = load(studies, "first").best_trial.number, load(studies, "update")
    assert launcher.main(["compare", "update", "--b", f"first:{first}"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith(f"best trial {update.best_trial.number} vs study 'first' "
                                   f"trial {first}: test accuracy ")
    kept = studies / "update" / "answers" / f"first-{first}" / "predictions_test.jsonl"
    answers = [json.loads(row) for row in kept.read_text().splitlines()]
    new_test = [json.loads(row) for row in (studies / "update" / "trials" / "0000" /
                                            "predictions_test.jsonl").read_text().splitlines()]
    assert [(a["prompt"], a["reference"]) for a in answers] == \
        [(r["prompt"], r["reference"]) for r in new_test]
    result = json.loads((studies / "update" / "comparison.json").read_text())
    assert result["b_value"] == pytest.approx(
        sum(a["prediction"].lower() == a["reference"].lower() for a in answers) / len(answers))
    # The adapter answers as it did in its own trial: on its own test split, the same rows.
    folder = studies / "first" / "trials" / f"{first:04d}"
    own = [json.loads(row) for row in (folder / "predictions_test.jsonl").read_text().splitlines()]
    assert CausalLMLoRA().answer(folder, folder, studies / "first" / "prepared", "test") == own
