"""The LoRA recipe: real fine-tune steps on the tiny model."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM

from objectives.base import TrialContext
from objectives.causal_lm_lora import CausalLMConfig, CausalLMLoRA, generation
from objectives.causal_lm_lora.config import model_config
from objectives.data.section import ChunkSection
from objectives.trainer import _BASE_MODELS, device_map, precision_flags
from tests.fakes import Recorder

# Real fine-tunes of the tiny model: seconds each, so outside make test-fast.
pytestmark = pytest.mark.slow


def tiny_config(**training) -> CausalLMConfig:
    return CausalLMConfig.model_validate({
        "data": {"max_length": 64},
        "training": {"learning_rate": 1e-2, "max_steps": 20, "eval_steps": 10,
                     "per_device_train_batch_size": 8, "per_device_eval_batch_size": 64,
                     **training},
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"},
    })


def run(config: CausalLMConfig, trial_dir: Path, prepared: Path, **context) -> list[dict]:
    trial_dir.mkdir(parents=True, exist_ok=True)
    objective = CausalLMLoRA()
    objective.prepare(config, prepared)
    recorder = Recorder()
    objective.run(config, TrialContext(0, trial_dir, prepared, recorder, **context))
    return recorder.results


def test_loss_falls_and_the_adapter_is_saved(tmp_path: Path) -> None:
    config = tiny_config(max_steps=30, learning_rate=3e-3)
    results = run(config, tmp_path / "t", tmp_path / "prepared")
    evals = [r for r in results if "outcome" not in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    # Real learning: the answer tokens' loss drops a lot from the first evaluation.
    assert evals[-1]["eval_loss"] < 0.6 * evals[0]["eval_loss"]
    final = results[-1]
    assert final["outcome"] == "complete"
    assert final["eval_loss"] == pytest.approx(min(r["eval_loss"] for r in evals))
    assert (tmp_path / "t" / "adapter" / "adapter_model.safetensors").is_file()
    lines = (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 30]


def test_restarted_trial_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    trial_dir, prepared = tmp_path / "t", tmp_path / "prepared"
    run(tiny_config(), trial_dir, prepared)
    # As if the worker died after step 10: the later checkpoint and the adapter are gone.
    shutil.rmtree(trial_dir / "checkpoints" / "checkpoint-20")
    shutil.rmtree(trial_dir / "adapter")
    resumed = run(tiny_config(), trial_dir, prepared)
    # The step count continues from 10: the only evaluation left is step 20.
    assert [r["step"] for r in resumed] == [20, 20]
    assert resumed[-1]["outcome"] == "complete"


def test_a_checkpoint_cut_short_by_a_kill_is_skipped_on_resume(tmp_path: Path) -> None:
    trial_dir, prepared = tmp_path / "t", tmp_path / "prepared"
    run(tiny_config(), trial_dir, prepared)
    # As if the worker died while writing step 20's checkpoint: the folder exists, but the
    # Trainer had not yet written its weights or its state (which it writes last).
    partial = trial_dir / "checkpoints" / "checkpoint-20"
    for name in ("adapter_model.safetensors", "trainer_state.json"):
        (partial / name).unlink()
    shutil.rmtree(trial_dir / "adapter")
    resumed = run(tiny_config(), trial_dir, prepared)
    assert [r["step"] for r in resumed] == [20, 20]
    assert resumed[-1]["outcome"] == "complete"


def test_non_finite_loss_stops_the_trial_as_pruned(tmp_path: Path) -> None:
    results = run(tiny_config(learning_rate=1e6, logging_steps=1, max_grad_norm=1e9),
                  tmp_path / "t", tmp_path / "prepared")
    assert results[-1]["outcome"] == "pruned"
    assert "loss became" in results[-1]["reason"]
    assert results[-1]["step"] < 20  # stopped at once, not at the end


def test_attention_heads_override_keeps_weight_shapes(tiny_model: Path) -> None:
    config = tiny_config()
    config.model.config_overrides = {"num_attention_heads": 8}
    changed = model_config(config, str(tiny_model))
    assert (changed.num_attention_heads, changed.head_dim, changed.num_key_value_heads) == \
        (8, 16, 8)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    rebuilt = AutoModelForCausalLM.from_pretrained(tiny_model, config=changed)
    # Every pretrained weight loads unchanged; only how q/k/v split into heads differs.
    for (name, a), (_, b) in zip(base.state_dict().items(), rebuilt.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    config.model.config_overrides = {"num_attention_heads": 3}
    with pytest.raises(ValueError, match="does not divide hidden_size=128"):
        model_config(config, str(tiny_model))


def test_precision_follows_the_device() -> None:
    assert precision_flags("auto", cuda=False, bf16_supported=False) == \
        {"bf16": False, "fp16": False}
    assert precision_flags("auto", cuda=True, bf16_supported=True) == \
        {"bf16": True, "fp16": False}
    # Older GPUs: fp16, which the Trainer trains with dynamic loss scaling.
    assert precision_flags("auto", cuda=True, bf16_supported=False) == \
        {"bf16": False, "fp16": True}
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        precision_flags("fp16", cuda=False, bf16_supported=False)


def test_a_trial_with_several_gpus_spreads_the_model_over_them(tiny_model: Path) -> None:
    assert device_map(0) is None and device_map(1) is None
    assert device_map(2) == "auto"
    # The same from_pretrained call, placed by accelerate: here every layer lands on the CPU.
    model = AutoModelForCausalLM.from_pretrained(tiny_model, device_map=device_map(2))
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_reused_base_model_gives_the_same_trial_as_a_fresh_one(tmp_path: Path) -> None:
    _BASE_MODELS.clear()
    fresh = run(tiny_config(), tmp_path / "a", tmp_path / "prepared")
    assert len(_BASE_MODELS) == 1  # kept for the worker's next trial, adapter removed
    reused = run(tiny_config(), tmp_path / "b", tmp_path / "prepared")
    assert [r["eval_loss"] for r in reused] == [r["eval_loss"] for r in fresh]
    # What survived the trials is frozen, out of the collector's way...
    assert gc.get_freeze_count() > 0
    base = next(iter(_BASE_MODELS.values()))
    base.__dict__["itself"] = base  # a reference cycle: only the collector can free it
    kept = weakref.ref(base)
    del base
    # ... and another architecture is loaded anew: the old model is thawed and freed.
    config = tiny_config()
    config.model.config_overrides = {"num_attention_heads": 8}
    run(config, tmp_path / "c", tmp_path / "prepared")
    assert kept() is None
    assert len(_BASE_MODELS) == 1
    assert next(iter(_BASE_MODELS.values())).config.num_attention_heads == 8


def test_memory_does_not_grow_over_ten_reused_trials(tmp_path: Path) -> None:
    process = psutil.Process()
    rss = []
    for number in range(10):
        run(tiny_config(max_steps=4, eval_steps=2), tmp_path / f"t{number}", tmp_path / "p")
        gc.collect()
        rss.append(process.memory_info().rss / 2**20)
    # After the first trials warm the allocator, the worker holds no trial's leftovers: the
    # last trials' lowest is not above the early ones' highest (the memory-mapped splits'
    # pages come and go by tens of MB; a leak grows with every trial).
    assert min(rss[-3:]) - max(rss[1:4]) < 25, [round(r) for r in rss]  # MB


def test_evaluations_answer_by_generation_and_the_figures_are_the_predictions(
        tmp_path: Path) -> None:
    """With the study metric eval_accuracy, every evaluation answers the validation prompts;
    the final report's test figures are those of predictions_test.jsonl."""
    config = tiny_config(max_steps=40, eval_steps=20, learning_rate=3e-3)
    config.evaluation.max_eval_examples = 30
    trial_dir = tmp_path / "t"
    results = run(config, trial_dir, tmp_path / "prepared", metric="eval_accuracy",
                  direction="maximize")
    evals, final = results[:-1], results[-1]
    assert [r["step"] for r in evals] == [20, 40]
    # A closed label set: the label metrics, not BLEU or ROUGE-L.
    assert all({"eval_accuracy", "eval_macro_f1"} <= set(r) for r in evals)
    assert not any({"eval_bleu", "eval_rougeL"} & set(r) for r in evals)
    # Evaluations while training answer the prompts and skip the loss pass.
    assert not any("eval_loss" in r for r in evals)
    assert evals[-1]["last_evaluation"] is True and "last_evaluation" not in evals[0]
    assert final["outcome"] == "complete"
    # The validation figures of the best checkpoint other than the study metric, and the test
    # split's, end the trial.
    assert {"eval_loss", "eval_macro_f1", "test_loss", "test_accuracy", "test_macro_f1"} \
        <= set(final)
    assert not {"eval_bleu", "eval_rougeL", "test_bleu", "test_rougeL"} & set(final)
    # The labels were found from the training answers.
    assert json.loads((trial_dir / "labels.json").read_text()) == \
        ["negative", "neutral", "positive"]
    test = [json.loads(line) for line in
            (trial_dir / "predictions_test.jsonl").read_text().splitlines()]
    assert len(test) == 120 and set(test[0]) == {"prompt", "reference", "prediction"}
    right = sum(r["prediction"].strip().casefold() == r["reference"].strip().casefold()
                for r in test)
    assert final["test_accuracy"] == pytest.approx(right / 120)
    # Training answered 30 validation examples; the final value is over all 120 of them.
    validation = (trial_dir / "predictions_validation.jsonl").read_text().splitlines()
    assert len(validation) == 120
    right = sum(json.loads(line)["prediction"] == json.loads(line)["reference"]
                for line in validation)
    assert final["eval_accuracy"] == pytest.approx(right / 120)


def test_a_further_objective_on_labels_comes_with_the_final_report(tmp_path: Path) -> None:
    """A label task scores BLEU when a multi-objective study asks for it (the search fails a
    trial whose final report lacks one of its objectives), and ROUGE-L, not asked, is not."""
    config = tiny_config(max_steps=20, eval_steps=20, learning_rate=3e-3)
    results = run(config, tmp_path / "t", tmp_path / "prepared", metric="eval_accuracy",
                  direction="maximize", other_metrics=("eval_bleu",))
    assert "eval_bleu" in results[0] and "test_bleu" in results[-1]
    assert results[-1]["outcome"] == "complete" and "eval_bleu" in results[-1]
    assert not any("eval_rougeL" in r or "test_rougeL" in r for r in results)


def test_a_search_for_accuracy_gets_the_validation_loss_of_its_best_checkpoint(
        tmp_path: Path) -> None:
    """Evaluations while training skip the loss pass when the study metric is answered; the
    final report's eval_loss is the best checkpoint's, as a trial searching for the loss
    reports it at that step (the same training: the loss pass changes no weights)."""
    config = tiny_config(max_steps=20, eval_steps=20, learning_rate=3e-3)
    by_loss = run(config, tmp_path / "a", tmp_path / "prepared")
    by_accuracy = run(config, tmp_path / "b", tmp_path / "prepared", metric="eval_accuracy",
                      direction="maximize")
    assert "eval_loss" in by_loss[0] and "eval_loss" not in by_accuracy[0]
    assert by_accuracy[-1]["eval_loss"] == pytest.approx(by_loss[0]["eval_loss"], rel=1e-5)
    assert by_accuracy[-1]["perplexity"] == pytest.approx(by_loss[0]["perplexity"], rel=1e-5)


def test_evaluations_where_the_scheduler_compares_trials_answer_the_whole_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_eval_examples, an evaluation answers part of the validation split, except the
    first at or after each of the scheduler's decision steps (ASHA's rungs)."""
    answered = []
    real = generation.generate

    def counting(model, tokenizer, prompts, *args):
        answered.append(len(prompts))
        return real(model, tokenizer, prompts, *args)

    monkeypatch.setattr(generation, "generate", counting)
    config = tiny_config(max_steps=40, eval_steps=10, learning_rate=3e-3)
    config.evaluation.max_eval_examples = 30
    run(config, tmp_path / "t", tmp_path / "prepared", metric="eval_accuracy",
        direction="maximize", decision_steps=(15.0, 30.0))
    # Steps 10, 20 (the first after 15), 30 (at 30), 40; then the final test split.
    assert answered[:4] == [30, 120, 120, 30]
    assert answered[-1] == 120


def test_the_untuned_default_is_not_stopped_by_early_stopping(tmp_path: Path) -> None:
    # A learning rate so small that nothing improves: patience 1 stops an ordinary trial
    # after its second evaluation, never the baseline.
    config = tiny_config(max_steps=40, learning_rate=1e-9)
    config.early_stopping.patience = 1
    config.early_stopping.min_delta = 1.0
    stopped = run(config, tmp_path / "a", tmp_path / "prepared")
    baseline = run(config, tmp_path / "b", tmp_path / "prepared", baseline=True)
    assert [r["step"] for r in stopped[:-1]] == [10, 20]
    assert [r["step"] for r in baseline[:-1]] == [10, 20, 30, 40]


def test_continued_pretraining_on_documents_learns_every_token(tmp_path: Path) -> None:
    corpus = Path(__file__).resolve().parents[3] / "data" / "finance_news.txt"
    config = tiny_config(max_steps=20)
    config.data.path, config.data.chunk = str(corpus), ChunkSection(tokens=64, overlap=8)
    assert [m.name for m in CausalLMLoRA().metrics_for(config)] == [
        "eval_loss", "latency_ms", "total_params", "trainable_params", "size_mb"]
    results = run(config, tmp_path / "t", tmp_path / "prepared")
    evals, final = results[:-1], results[-1]
    assert final["outcome"] == "complete" and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert "test_loss" in final and not any(key.endswith("accuracy") for key in final)
    assert not (tmp_path / "t" / "predictions_test.jsonl").exists()
