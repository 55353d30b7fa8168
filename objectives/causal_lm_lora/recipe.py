"""Recipe: LoRA supervised fine-tuning of a causal language model, one trial top to bottom.

load prepared data -> load base model (config overrides applied) -> attach LoRA -> train with
transformers' Trainer (warmup schedule, accumulation, mixed precision, checkpoints, early
stopping on the study's metric) reporting each evaluation to the search -> evaluate the best
checkpoint by generation on the validation and test splits -> save the adapter and the
predictions. A restarted trial resumes from its last complete checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    Trainer,
    set_seed,
)
from transformers.trainer_utils import EvalLoopOutput

from objectives import costs
from objectives.adapter import continued_adapter
from objectives.base import LABELS, TrialContext, write_predictions
from objectives.causal_lm_lora import data, generation
from objectives.causal_lm_lora.config import (
    LAYER_PROFILE,
    CausalLMConfig,
    EvaluationSection,
    model_config,
    model_path,
)
from objectives.causal_lm_lora.layer_profile import profile_layers
from objectives.data.files import load_labels, load_split, load_texts
from objectives.data.replay import SPLITS
from objectives.trainer import (
    best_step,
    cached_base_model,
    device_map,
    logged_evaluation,
    quiet_transformers,
    train_trial,
    training_arguments,
    trial_callbacks,
    with_lora,
)


def load_base_model(config: CausalLMConfig) -> PreTrainedModel:
    """The base model with the config overrides applied; a change of architecture (e.g.
    num_attention_heads) is another key of the worker's cache and loads anew."""
    path = model_path(config)
    architecture = model_config(config, path)
    key = json.dumps([path, architecture.to_dict()], sort_keys=True, default=str)
    return cached_base_model(key, lambda: AutoModelForCausalLM.from_pretrained(
        path, config=architecture, device_map=device_map(torch.cuda.device_count())))


class GenerativeTrainer(Trainer):
    """A Trainer whose evaluations also answer the split's prompts greedily and add the task
    metrics (``eval_accuracy``, ...) to the loss, before callbacks and model selection see
    them. Each evaluation prefix answers its split (SPLITS: eval the validation split, ...).

    ``metrics`` are the study's (eval_accuracy, eval_loss, ...; the first is the one it
    optimises): evaluations while training answer the prompts when the first is an answer
    metric, and ``generation.scored_metrics`` says which metrics they score. With
    ``loss_while_answering=False``, evaluations while training that answer the prompts skip
    the loss pass over the split (a search for a task metric has no use for it there;
    ``validation_loss`` gives the best checkpoint's at the end)."""

    def __init__(self, *args, prepared: Path, evaluation: EvaluationSection,
                 metrics: Sequence[str], tokenizer,
                 decision_steps: tuple[float, ...] = (), loss_while_answering: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prepared, self.evaluation, self.answer_tokenizer = prepared, evaluation, tokenizer
        self.answer_during_training = generation.answer_metric(metrics[0]) is not None
        self.loss_while_answering = loss_while_answering
        self.labels = load_labels(prepared)
        self.scored = generation.scored_metrics(self.labels, metrics)
        self.max_new_tokens = evaluation.max_new_tokens or generation.longest_answer(
            self.train_dataset)
        self.final = False  # set for the evaluations after training: whole splits
        # Where the scheduler compares trials, evaluations answer the whole split too.
        self.decision_steps, self._evaluated_at = decision_steps, 0
        self.rows: dict[str, list[dict[str, str]]] = {}  # prefix -> rows of its last answers
        self.rows_at_step: dict[int, list[dict[str, str]]] = {}  # whole-split validation rows
        self._splits: dict[str, tuple[list[dict[str, str]], list[list[int]]]] = {}

    def _split(self, name: str) -> tuple[list[dict[str, str]], list[list[int]]]:
        """A split's prompts and references, and its prompts' token ids, read once."""
        if name not in self._splits:
            texts = load_texts(self.prepared, name)
            self._splits[name] = (texts, [generation.prompt_ids(row) for row in
                                          load_split(self.prepared, name)] if texts else [])
        return self._splits[name]

    def _validation_limit(self) -> int | None:
        """How many validation prompts an evaluation while training answers: all of them at
        the first evaluation from each of the scheduler's decision steps on, else
        ``evaluation.max_eval_examples``."""
        step, previous = self.state.global_step, self._evaluated_at
        self._evaluated_at = step
        if any(previous < rung <= step for rung in self.decision_steps):
            return None
        return self.evaluation.max_eval_examples

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None,
                        ignore_keys=None, metric_key_prefix="eval"):
        split = SPLITS.get(metric_key_prefix)
        answering = split is not None and (self.final or self.answer_during_training)
        if answering and not (self.final or self.loss_while_answering):
            output = EvalLoopOutput(None, None, {}, len(dataloader.dataset))
        else:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only,
                                             ignore_keys, metric_key_prefix)
        if not answering:
            return output
        limit = None if self.final or split != "validation" else self._validation_limit()
        texts, prompts = self._split(split)
        if not texts:  # documents (data.chunk): no prompts to answer
            return output
        texts = texts[:limit]
        answers = generation.generate(self.model, self.answer_tokenizer, prompts[:len(texts)],
                                      self.max_new_tokens,
                                      self.args.per_device_eval_batch_size)
        rows = [{**text, "prediction": answer} for text, answer in zip(texts, answers, strict=True)]
        self.rows[metric_key_prefix] = rows
        if split == "validation" and len(rows) == len(prompts):
            self.rows_at_step[self.state.global_step] = rows
        scores = generation.answer_metrics(rows, self.labels, self.scored)
        output.metrics.update({f"{metric_key_prefix}_{name}": value
                               for name, value in scores.items()})
        return output

    def validation_loss(self) -> float:
        """The loss of the model as it is now over the validation split, with no answers."""
        return Trainer.evaluation_loop(self, self.get_eval_dataloader(), "Evaluation",
                                       prediction_loss_only=True).metrics["eval_loss"]


def run(config: CausalLMConfig, context: TrialContext, prepared: Path) -> None:
    """One trial; ``prepared`` holds the tokenised splits (see data.prepare)."""
    quiet_transformers()
    torch.set_num_threads(context.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    base = load_base_model(config)
    set_seed(config.training.seed)  # after loading, so a reused base gives the same adapter init
    model = with_lora(base, "CAUSAL_LM", config.lora, adapter=continued_adapter(config))
    train, augmented = data.training_set(prepared, config.data, tokenizer, config.data.seed)
    attrs = {"augmented_rows": augmented} if augmented else {}
    train_trial(lambda: GenerativeTrainer(
        model=model,
        args=training_arguments(config.training, context),
        train_dataset=train,
        eval_dataset=load_split(prepared, "validation"),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                             label_pad_token_id=data.IGNORE_INDEX),
        callbacks=trial_callbacks(context, config.early_stopping,
                                  lambda key: generation.answer_metric(key) is not None,
                                  perplexity=True),
        prepared=prepared, evaluation=config.evaluation,
        metrics=(context.metric, *context.other_metrics),
        tokenizer=tokenizer, decision_steps=context.decision_steps, loss_while_answering=False,
    ), model, context, lambda trainer: _finish(trainer, prepared, tokenizer, context, attrs))


def _finish(trainer: GenerativeTrainer, prepared: Path, tokenizer, context: TrialContext,
            attrs: dict[str, int]) -> None:
    """The best checkpoint (loaded back by the Trainer) answers the whole validation split
    (unless it already did while training) and the test split; its adapter, predictions and
    label set are saved, and the last report ends the trial with the validation value."""
    trainer.final = True
    validation = {}
    rows = trainer.rows_at_step.get(best_step(trainer))
    best = trainer.state.best_metric
    if best is None or (rows is None and trainer.answer_during_training):
        validation = trainer.evaluate()  # no evaluation yet, or on part of the split only
        best, rows = validation[context.metric], trainer.rows["eval"]
    if not validation:  # the best evaluation during training: its figures as logged then
        validation = logged_evaluation(trainer, best_step(trainer))
    if "eval_loss" not in validation:  # evaluations while training only answered
        validation["eval_loss"] = trainer.validation_loss()
    if rows is not None:
        write_predictions(context.trial_dir, "validation", rows)
    # Per-layer time, memory and activations of the final model, charted by the report.
    profile = context.trial_dir / LAYER_PROFILE
    profile.unlink(missing_ok=True)  # a restarted trial's final evaluation starts afresh
    with profile_layers(trainer.model, profile):
        test = trainer.evaluate(load_split(prepared, "test"), metric_key_prefix="test")
    if "test" in trainer.rows:
        write_predictions(context.trial_dir, "test", trainer.rows["test"])
    old = {}
    if (prepared / SPLITS["old_eval"]).is_dir():  # an update: the earlier held-out data too
        for prefix in ("old_eval", "old_test"):
            old.update(trainer.evaluate(load_split(prepared, SPLITS[prefix]),
                                        metric_key_prefix=prefix))
            write_predictions(context.trial_dir, SPLITS[prefix], trainer.rows[prefix])
    shutil.copy2(prepared / LABELS, context.trial_dir / LABELS)
    trainer.model.save_pretrained(context.trial_dir / "adapter")
    tokenizer.save_pretrained(context.trial_dir / "adapter")
    final = {k: v for k, v in {**validation, **test, **old}.items()
             if k.endswith(("eval_loss", "test_loss")) or generation.answer_metric(k)}
    final.update(costs.measure(trainer.model, costs.test_batch(
        load_split(prepared, "test"), trainer.data_collator)))
    final.pop(context.metric, None)
    loss = final.get("eval_loss", best if context.metric == "eval_loss" else None)
    if loss is not None:
        final["perplexity"] = math.exp(min(loss, 50.0))
    context.complete(best, step=trainer.state.global_step, attrs=attrs, **final)


def answer(config: CausalLMConfig, adapter: Path, prepared: Path,
           split: str) -> list[dict[str, str]]:
    """A saved adapter on a freshly loaded base (the config's) answers a prepared split
    greedily, as a trial's final evaluation does: its prediction rows."""
    from peft import PeftModel

    quiet_transformers()
    path = model_path(config)
    base = AutoModelForCausalLM.from_pretrained(path, config=model_config(config, path))
    model = PeftModel.from_pretrained(base, adapter).eval()
    max_new_tokens = config.evaluation.max_new_tokens or generation.longest_answer(
        load_split(prepared, "train"))
    texts = load_texts(prepared, split)
    answers = generation.generate(
        model, AutoTokenizer.from_pretrained(path),
        [generation.prompt_ids(row) for row in load_split(prepared, split)], max_new_tokens,
        config.training.per_device_eval_batch_size)
    return [{**text, "prediction": answer} for text, answer in zip(texts, answers, strict=True)]
