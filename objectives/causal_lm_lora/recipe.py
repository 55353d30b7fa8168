"""Recipe: LoRA supervised fine-tuning of a causal language model, one trial top to bottom.

load prepared data -> load base model (config overrides applied) -> attach LoRA -> train with
transformers' Trainer (warmup schedule, accumulation, mixed precision, checkpoints, early
stopping on the study's metric) reporting each evaluation to the search -> evaluate the best
checkpoint by generation on the validation and test splits -> save the adapter and the
predictions. A restarted trial resumes from its last complete checkpoint.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from objectives.base import LABELS, LAST_EVALUATION, TrialContext, finite, write_predictions
from objectives.causal_lm_lora import data, generation
from objectives.causal_lm_lora.config import (
    CausalLMConfig,
    EvaluationSection,
    model_config,
    model_path,
    module_names,
)
from objectives.causal_lm_lora.layer_profile import LAYER_PROFILE, profile_layers

# The base model a worker loaded last. Ray reuses workers across trials, so a trial whose
# model and architecture match the last one's only adds a fresh LoRA adapter to it; a change
# of architecture (e.g. num_attention_heads) is a different key and loads anew.
_BASE_MODELS: dict[str, PreTrainedModel] = {}


def load_base_model(config: CausalLMConfig) -> PreTrainedModel:
    path = model_path(config)
    architecture = model_config(config, path)
    key = json.dumps([path, architecture.to_dict()], sort_keys=True, default=str)
    if key not in _BASE_MODELS:
        _BASE_MODELS.clear()
        gc.collect()  # drop the old model before loading the new one
        _BASE_MODELS[key] = AutoModelForCausalLM.from_pretrained(
            path, config=architecture, device_map=device_map(torch.cuda.device_count()))
    return _BASE_MODELS[key]


def device_map(visible_gpus: int) -> str | None:
    """A trial given several GPUs (Ray shows it only its own) spreads the model's layers over
    them, for models that do not fit one; the Trainer then trains it in place, layer by layer,
    rather than copying it to each GPU. One GPU or none: the Trainer places the model."""
    return "auto" if visible_gpus > 1 else None


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing. It writes trainer_state.json last,
    so a worker killed in the middle of a save leaves a folder without it: skipped."""
    complete = [path for path in sort_checkpoints(str(checkpoints))
                if (Path(path) / TRAINER_STATE_NAME).is_file()]
    return complete[-1] if complete else None


def precision_flags(precision: str, cuda: bool, bf16_supported: bool) -> dict[str, bool]:
    """TrainingArguments flags: bf16 where the GPU has it, else fp16 (Trainer scales the loss
    dynamically); fp32 on CPU, where half precision is slow and fp16 unsupported."""
    if precision == "auto":
        precision = ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if precision != "fp32" and not cuda:
        raise ValueError(f"precision {precision} needs a CUDA GPU; use fp32 or auto")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


class _ReportEvaluations(TrainerCallback):
    """Hands every evaluation to the search, which is what the scheduler acts on."""

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = metrics["eval_loss"]
        report = {
            "step": state.global_step,
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "train_loss": _last_train_loss(state),
            **{k: v for k, v in metrics.items() if generation.answer_metric(k)},
        }
        # The last evaluation is followed by the final one: no scheduler may stop it here.
        if state.global_step >= state.max_steps or control.should_training_stop:
            report[LAST_EVALUATION] = True
        self.context.report(report)


class _StopOnNonFiniteLoss(TrainerCallback):
    """A NaN or infinite loss ends the trial at once; it will not recover."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not finite(loss):
            self.reason = f"training loss became {loss} at step {state.global_step}"
            control.should_training_stop = True


def _last_train_loss(state) -> float:
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    return float(losses[-1]) if losses else float("nan")


class GenerativeTrainer(Trainer):
    """A Trainer whose evaluations also answer the split's prompts greedily and add the task
    metrics (``eval_accuracy``, ...) to the loss, before callbacks and model selection see
    them. Evaluations with the prefix eval answer the validation split, test the test one."""

    def __init__(self, *args, prepared: Path, evaluation: EvaluationSection,
                 answer_during_training: bool, tokenizer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prepared, self.evaluation, self.answer_tokenizer = prepared, evaluation, tokenizer
        self.answer_during_training = answer_during_training
        self.labels = data.load_labels(prepared)
        self.max_new_tokens = evaluation.max_new_tokens or generation.longest_answer(
            self.train_dataset)
        self.final = False  # set for the evaluations after training: whole splits
        self.rows: dict[str, list[dict[str, str]]] = {}  # prefix -> rows of its last answers
        self.rows_at_step: dict[int, list[dict[str, str]]] = {}  # whole-split validation rows
        self._splits: dict[str, tuple[list[dict[str, str]], list[list[int]]]] = {}

    def _split(self, name: str) -> tuple[list[dict[str, str]], list[list[int]]]:
        """A split's prompts and references, and its prompts' token ids, read once."""
        if name not in self._splits:
            self._splits[name] = (data.load_texts(self.prepared, name),
                                  [generation.prompt_ids(row)
                                   for row in data.load_split(self.prepared, name)])
        return self._splits[name]

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None,
                        ignore_keys=None, metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only,
                                         ignore_keys, metric_key_prefix)
        split = {"eval": "validation", "test": "test"}.get(metric_key_prefix)
        if split is None or not (self.final or self.answer_during_training):
            return output
        limit = None if self.final else self.evaluation.max_eval_examples
        texts, prompts = self._split(split)
        texts = texts[:limit]
        answers = generation.generate(self.model, self.answer_tokenizer, prompts[:len(texts)],
                                      self.max_new_tokens,
                                      self.args.per_device_eval_batch_size)
        rows = [{**text, "prediction": answer} for text, answer in zip(texts, answers, strict=True)]
        self.rows[metric_key_prefix] = rows
        if split == "validation" and len(rows) == len(prompts):
            self.rows_at_step[self.state.global_step] = rows
        output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value
                               in generation.answer_metrics(rows, self.labels).items()})
        return output


def run(config: CausalLMConfig, context: TrialContext, prepared: Path) -> None:
    """One trial; ``prepared`` holds the tokenised splits (see data.prepare)."""
    train_cfg = config.training
    torch.set_num_threads(context.threads)
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    base = load_base_model(config)
    set_seed(train_cfg.seed)  # after loading, so a reused base gives the same adapter init
    try:
        model = get_peft_model(base, LoraConfig(
            task_type="CAUSAL_LM", r=config.lora.r, lora_alpha=config.lora.lora_alpha,
            lora_dropout=config.lora.lora_dropout, target_modules=module_names(config.lora),
            bias=config.lora.bias,
        ))
    except Exception:
        _BASE_MODELS.clear()  # it may be half-changed: the next trial loads it afresh
        raise

    cuda = torch.cuda.is_available()
    checkpoints = context.trial_dir / "checkpoints"
    answer_metric = generation.answer_metric(context.metric) is not None
    args = TrainingArguments(
        output_dir=str(checkpoints),
        learning_rate=train_cfg.learning_rate,
        per_device_train_batch_size=train_cfg.per_device_train_batch_size,
        per_device_eval_batch_size=train_cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=train_cfg.gradient_accumulation_steps,
        num_train_epochs=train_cfg.num_train_epochs,
        max_steps=train_cfg.max_steps,
        warmup_steps=train_cfg.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=train_cfg.lr_scheduler_type,
        weight_decay=train_cfg.weight_decay,
        max_grad_norm=train_cfg.max_grad_norm,
        eval_strategy="steps",
        eval_steps=train_cfg.eval_steps,
        save_strategy="steps",
        save_steps=train_cfg.save_steps or train_cfg.eval_steps,
        save_total_limit=train_cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=context.metric,
        greater_is_better=context.maximize,
        logging_steps=train_cfg.logging_steps,
        logging_nan_inf_filter=False,  # a NaN must reach _StopOnNonFiniteLoss, not be hidden
        activation_checkpointing=train_cfg.gradient_checkpointing,
        seed=train_cfg.seed,
        use_cpu=not cuda,
        **precision_flags(train_cfg.precision, cuda, cuda and torch.cuda.is_bf16_supported()),
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    guard = _StopOnNonFiniteLoss()
    trainer = GenerativeTrainer(
        model=model,
        args=args,
        train_dataset=data.load_split(prepared, "train"),
        eval_dataset=data.load_split(prepared, "validation"),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                             label_pad_token_id=data.IGNORE_INDEX),
        callbacks=[
            _ReportEvaluations(context),
            guard,
            # The untuned default trains to its end: it is what every trial is compared with.
            *([] if context.baseline else [EarlyStoppingCallback(
                config.early_stopping.patience, config.early_stopping.min_delta)]),
        ],
        prepared=prepared, evaluation=config.evaluation, answer_during_training=answer_metric,
        tokenizer=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # evaluations go to the search, not stdout
    try:
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(checkpoints))
        if guard.reason:
            context.prune(guard.reason, step=trainer.state.global_step)
        else:
            _finish(trainer, prepared, tokenizer, context)
    finally:
        # Take the adapter off the base (kept for the worker's next trial) and free what
        # the trial held, also when the scheduler stops it mid-run.
        model.unload()
        del trainer, model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def _best_step(trainer: Trainer) -> int | None:
    best = trainer.state.best_model_checkpoint
    return int(Path(best).name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")) if best else None


def _finish(trainer: GenerativeTrainer, prepared: Path, tokenizer, context: TrialContext) -> None:
    """The best checkpoint (loaded back by the Trainer) answers the whole validation split
    (unless it already did while training) and the test split; its adapter, predictions and
    label set are saved, and the last report ends the trial with the validation value."""
    for callback in (_ReportEvaluations, EarlyStoppingCallback):
        trainer.remove_callback(callback)
    trainer.final = True
    validation = {}
    rows = trainer.rows_at_step.get(_best_step(trainer))
    best = trainer.state.best_metric
    if best is None or (rows is None and trainer.answer_during_training):
        validation = trainer.evaluate()  # no evaluation yet, or on part of the split only
        best, rows = validation[context.metric], trainer.rows["eval"]
    if not validation:  # the best evaluation during training: its figures as logged then
        step = _best_step(trainer)
        validation = next((entry for entry in trainer.state.log_history
                           if entry.get("step") == step and "eval_loss" in entry), {})
    if rows is not None:
        write_predictions(context.trial_dir, "validation", rows)
    # Per-layer time, memory and activations of the final model, charted by the report.
    profile = context.trial_dir / LAYER_PROFILE
    profile.unlink(missing_ok=True)  # a restarted trial's final evaluation starts afresh
    with profile_layers(trainer.model, profile):
        test = trainer.evaluate(data.load_split(prepared, "test"), metric_key_prefix="test")
    write_predictions(context.trial_dir, "test", trainer.rows["test"])
    shutil.copy2(prepared / LABELS, context.trial_dir / LABELS)
    trainer.model.save_pretrained(context.trial_dir / "adapter")
    tokenizer.save_pretrained(context.trial_dir / "adapter")
    final = {k: v for k, v in {**validation, **test}.items()
             if k in ("eval_loss", "test_loss") or generation.answer_metric(k)}
    final.pop(context.metric, None)
    loss = final.get("eval_loss", best if context.metric == "eval_loss" else None)
    if loss is not None:
        final["perplexity"] = math.exp(min(loss, 50.0))
    context.complete(best, step=trainer.state.global_step, **final)
