"""The classification recipe and its export: real fine-tune steps of the real MiniLM weights
on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from objectives.base import DataError, FinishedTrial, TrialContext
from objectives.sequence_classification_lora import (
    ClassificationConfig,
    SequenceClassificationLoRA,
)
from objectives.sequence_classification_lora.config import DATA
from objectives.sequence_classification_lora.recipe import PER_CLASS
from objectives.trainer import _BASE_MODELS
from tests.fakes import Recorder

# Real fine-tunes of a 22.7M-parameter model: tens of seconds, so outside make test-fast.
pytestmark = pytest.mark.slow

LABELS = ["negative", "neutral", "positive"]


def config(**sections) -> ClassificationConfig:
    training = {"learning_rate": 5e-3, "lr_scheduler_type": "constant", "max_steps": 40,
                "eval_steps": 20,
                "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
                **sections.pop("training", {})}
    return ClassificationConfig.model_validate({"data": {"max_length": 48},
                                                "training": training, **sections})


def run(cfg: ClassificationConfig, root: Path, name: str) -> list[dict]:
    trial_dir = root / name
    trial_dir.mkdir(parents=True)
    objective = SequenceClassificationLoRA()
    objective.prepare(cfg, root / "prepared")
    recorder = Recorder()
    objective.run(cfg, TrialContext(0, trial_dir, root / "prepared", recorder,
                                    metric="eval_accuracy", direction="maximize"))
    return recorder.results


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("classifier")
    _BASE_MODELS.clear()
    return root, run(config(), root, "first")


def test_loss_falls_and_the_metrics_are_in_range(trained):
    root, results = trained
    evals, final = results[:-1], results[-1]
    assert [r["step"] for r in evals] == [20, 40]
    assert evals[-1]["eval_loss"] < 0.5 * evals[0]["eval_loss"] < 0.5 * 1.1  # ln 3 = 1.0986
    assert final["outcome"] == "complete"
    for key in ("eval_accuracy", "eval_macro_f1", "test_accuracy", "test_macro_f1"):
        assert 0.8 < final[key] <= 1.0, key
    # The best checkpoint's validation figures end the trial.
    assert final["eval_accuracy"] == max(r["eval_accuracy"] for r in evals)


def test_the_model_is_the_pretrained_minilm_with_a_trained_head(trained):
    base = next(iter(_BASE_MODELS.values()))
    assert base.config.model_type == "bert" and base.config.num_hidden_layers == 6
    assert base.config.id2label == dict(enumerate(LABELS))
    folder = trained[0] / "first" / "adapter"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert "classifier" in adapter["modules_to_save"]  # the head is trained in full
    assert set(adapter["target_modules"]) == {"query", "key", "value"}
    saved = load_file(folder / "adapter_model.safetensors")
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(saved)
    assert all("lora_" in key or ".classifier." in key for key in saved)


def test_per_class_figures_and_predictions_are_kept(trained):
    root, results = trained
    attrs = json.loads(results[-1]["attrs"])
    assert attrs["labels"] == LABELS
    matrix = attrs["test_confusion_matrix"]
    rows = [json.loads(line) for line in (root / "first" / "predictions_test.jsonl")
            .read_text().splitlines()]
    assert sum(map(sum, matrix)) == len(rows) == 120
    right = sum(row["prediction"] == row["reference"] for row in rows)
    assert sum(matrix[i][i] for i in range(3)) == right
    assert results[-1]["test_accuracy"] == pytest.approx(right / 120)
    for i, label in enumerate(LABELS):
        recall = matrix[i][i] / sum(matrix[i])
        assert attrs["test_per_class"][label]["recall"] == pytest.approx(recall)
    assert json.loads((root / "first" / PER_CLASS).read_text())["confusion_matrix"] == matrix


def test_a_second_trial_on_the_kept_base_starts_anew(trained):
    # The base stays loaded; unloading LoRA leaves the trained head in it, which the next
    # trial must not start from: the same config gives the same trial.
    root, results = trained
    assert len(_BASE_MODELS) == 1
    again = run(config(), root, "second")
    assert len(_BASE_MODELS) == 1
    assert [r["eval_loss"] for r in again] == pytest.approx([r["eval_loss"] for r in results],
                                                            rel=1e-4)


def test_focal_loss_class_weights_and_augmentation_train_on_imbalanced_data(tmp_path):
    cfg = config(data={"path": str(DATA / "finance_sentiment_imbalanced.csv"),
                       "max_length": 48, "augment": {"p": 0.2}},
                 training={"max_steps": 20, "eval_steps": 10},
                 loss={"focal_gamma": 2.0, "class_weights": "balanced"})
    results = run(cfg, tmp_path, "focal")
    assert results[-1]["outcome"] == "complete"
    assert results[1]["eval_loss"] < results[0]["eval_loss"]
    # One augmented copy of (nearly) every one of the 432 training examples was added.
    assert 400 < json.loads(results[-1]["attrs"])["augmented_rows"] <= 432


def test_export_merges_the_adapter_and_gives_the_same_logits(trained, tmp_path):
    root, results = trained
    trial = FinishedTrial("s", 0, results[-1]["eval_accuracy"], {}, root / "first",
                          "eval_accuracy")
    (root / "first" / "config.yaml").write_text(json.dumps(config().model_dump(mode="json")))
    objective = SequenceClassificationLoRA()
    with pytest.raises(DataError, match="quantisation is for GGUF"):
        objective.export(trial, tmp_path / "out", {"quantize": "q8_0"})
    lines = objective.export(trial, tmp_path / "out", {"quantize": None})
    assert "not Ollama" in lines[-1]
    result = json.loads((tmp_path / "out" / "export.json").read_text())
    assert result["passed"] and result["checks"]["merge"]["max_abs_logit_diff"] <= 1e-4
    # The folder loads on its own, labels included, and classifies as the trial did.
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert model.config.id2label == dict(enumerate(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    rows = [json.loads(line) for line in (root / "first" / "predictions_test.jsonl")
            .read_text().splitlines()][:16]
    with torch.no_grad():
        logits = model(**tokenizer([r["prompt"] for r in rows], padding=True, truncation=True,
                                   max_length=48, return_tensors="pt")).logits
    assert [LABELS[i] for i in logits.argmax(-1).tolist()] == [r["prediction"] for r in rows]


def test_an_update_continues_the_adapter_with_replay_and_reports_the_old_task(trained):
    root, _ = trained
    (root / "first" / "config.yaml").write_text(json.dumps(config().model_dump(mode="json")))
    columns = {"text": "input", "label": "output"}
    data = DATA / "finance_sentiment_{}.jsonl"
    cfg = config(model={"adapter": str(root / "first")},
                 data={"path": str(data).format("new"), "columns": columns, "max_length": 48,
                       "replay": {"path": str(data).format("old"), "fraction": 0.5}},
                 training={"max_steps": 20, "eval_steps": 10})
    results = run(cfg, root, "update")
    (root / "update" / "config.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    final = results[-1]
    assert final["outcome"] == "complete"
    for key in ("old_eval_accuracy", "old_eval_macro_f1", "old_test_accuracy", "old_eval_loss"):
        assert 0 <= final[key] <= (1 if "loss" not in key else 10), key
    objective = SequenceClassificationLoRA()
    assert {m.name for m in objective.metrics_for(cfg)} >= {"old_eval_accuracy",
                                                            "old_eval_macro_f1"}
    report = objective.prepare(cfg, root / "prepared")
    assert report["replay"]["old_examples"] == report["replay"]["new_examples"] > 0
    old_test = (root / "update" / "predictions_old_test.jsonl").read_text().splitlines()
    assert len(old_test) == report["replay"]["old_test"]
    # The first trial's model answers the update's new test split, example by example...
    answers = objective.answer(root / "first", root / "update", root / "prepared", "test")
    new_test = [json.loads(row) for row in
                (root / "update" / "predictions_test.jsonl").read_text().splitlines()]
    assert [(a["prompt"], a["reference"]) for a in answers] == \
        [(r["prompt"], r["reference"]) for r in new_test]
    # ... as it answered its own test split in its trial.
    own = [json.loads(row) for row in
           (root / "first" / "predictions_test.jsonl").read_text().splitlines()]
    assert objective.answer(root / "first", root / "first", root / "prepared", "test") == own
    with pytest.raises(DataError, match="no old_test split"):
        objective.answer(root / "first", root / "first", root / "prepared", "old_test")
