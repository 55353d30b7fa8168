"""The parts of a trial that every Hugging Face Trainer objective shares.

The base model kept loaded between trials, the TrainingArguments a space's training section
means, the callbacks that report each evaluation to the search and stop on a NaN loss, and the
train-then-finish frame that resumes from the last complete checkpoint and frees the trial's
memory however it ends. An objective's recipe builds its model, data and Trainer, then calls
``train_trial``.
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints
from transformers.utils import logging as transformers_logging

from objectives.base import LAST_EVALUATION, TrialContext, finite
from objectives.sections import EarlyStoppingSection, LoraSection, TrainingSection, module_names

# The base model a worker loaded last. Ray reuses workers across trials, so a trial whose
# model matches the last one's only adds a fresh adapter to it; another key loads anew.
_BASE_MODELS: dict[str, PreTrainedModel] = {}


def quiet_transformers() -> None:
    """No progress bars and no deprecation notices of transformers' own code on stderr: the
    user reads every line there as a problem of theirs."""
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def cached_base_model(key: str, load: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """The model stored under ``key``, loaded by ``load`` when the worker holds another."""
    if key not in _BASE_MODELS:
        forget_base_model()  # drop the old model before loading the new one
        _BASE_MODELS[key] = load()
    return _BASE_MODELS[key]


def forget_base_model() -> None:
    """Drop the kept model, e.g. when attaching an adapter failed and may have changed it.
    What ``settle`` froze is thawed first, so that the collector can free the model."""
    gc.unfreeze()
    _BASE_MODELS.clear()
    gc.collect()


def settle() -> None:
    """Free what the trial left, then, once per kept model, freeze what survives (the imported
    libraries, the kept base model): Python's collector then no longer walks those 600,000
    objects at every full collection, which took 0.4 s each, several times a trial."""
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()


def with_lora(base: PreTrainedModel, task_type: str, lora: LoraSection,
              reset: Callable[[PreTrainedModel], None] | None = None,
              adapter: Path | None = None):
    """``base`` with a fresh LoRA adapter of the space's ``lora`` section, or the saved
    ``adapter`` to train on (``reset`` first readies the base, e.g. a new head, which a saved
    adapter's own then replaces). A failure drops the kept base, which it may have
    half-changed, so the next trial loads it afresh."""
    from peft import LoraConfig, PeftModel, get_peft_model

    try:
        if reset is not None:
            reset(base)
        if adapter is not None:
            return PeftModel.from_pretrained(base, adapter, is_trainable=True)
        return get_peft_model(base, LoraConfig(
            task_type=task_type, r=lora.r, lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout, target_modules=module_names(lora), bias=lora.bias))
    except Exception:
        forget_base_model()
        raise


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


def training_arguments(train: TrainingSection, context: TrialContext,
                       **extra: Any) -> TrainingArguments:
    """What the space's training section means to the Trainer: evaluations and checkpoints on
    the same steps, the best checkpoint by the study's metric loaded at the end, no logging
    of its own (evaluations go to the search). ``extra`` adds objective-specific arguments."""
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(context.trial_dir / "checkpoints"),
        learning_rate=train.learning_rate,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        warmup_steps=train.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=train.lr_scheduler_type,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        eval_strategy="steps",
        eval_steps=train.eval_steps,
        save_strategy="steps",
        save_steps=train.save_steps or train.eval_steps,
        save_total_limit=train.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=context.metric,
        greater_is_better=context.maximize,
        logging_steps=train.logging_steps,
        logging_nan_inf_filter=False,  # a NaN must reach StopOnNonFiniteLoss, not be hidden
        activation_checkpointing=train.gradient_checkpointing,
        seed=train.seed,
        use_cpu=not cuda,
        **precision_flags(train.precision, cuda, cuda and torch.cuda.is_bf16_supported()),
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **extra,
    )


class ReportEvaluations(TrainerCallback):
    """Hands every evaluation to the search, which is what the scheduler acts on: the loss,
    the last training loss and the evaluation's metrics that ``keep`` accepts."""

    def __init__(self, context: TrialContext, keep: Callable[[str], bool],
                 perplexity: bool = False) -> None:
        self.context, self.keep, self.perplexity = context, keep, perplexity

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = metrics.get("eval_loss")  # absent where evaluations only answer (see recipes)
        losses = {} if loss is None else {
            "eval_loss": loss,
            **({"perplexity": math.exp(min(loss, 50.0))} if self.perplexity else {})}
        report = {
            "step": state.global_step,
            **losses,
            "train_loss": _last_train_loss(state),
            **{k: v for k, v in metrics.items() if self.keep(k)},
        }
        # The last evaluation is followed by the final one: no scheduler may stop it here.
        if state.global_step >= state.max_steps or control.should_training_stop:
            report[LAST_EVALUATION] = True
        self.context.report(report)


class StopOnNonFiniteLoss(TrainerCallback):
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


def trial_callbacks(context: TrialContext, early_stopping: EarlyStoppingSection,
                    keep: Callable[[str], bool], perplexity: bool = False,
                    ) -> list[TrainerCallback]:
    """Reporting, the NaN guard and (except for the untuned default, which trains to its end:
    it is what every trial is compared with) early stopping."""
    return [
        ReportEvaluations(context, keep, perplexity),
        StopOnNonFiniteLoss(),
        *([] if context.baseline else [EarlyStoppingCallback(
            early_stopping.patience, early_stopping.min_delta)]),
    ]


def train_trial(make_trainer: Callable[[], Trainer], model, context: TrialContext,
                finish: Callable[[Trainer], None]) -> None:
    """Train the Trainer ``make_trainer`` builds for ``model`` (resuming from the trial's last
    complete checkpoint), then ``finish`` it (final evaluations, saving, ``context.complete``),
    or end PRUNED on a NaN loss. However it ends, an adapter comes off the base (kept for the
    worker's next trial) and what the trial held is freed, also when the scheduler stops it
    mid-run: this frame holds the only reference to the Trainer."""
    trainer = make_trainer()
    trainer.remove_callback(PrinterCallback)  # evaluations go to the search, not stdout
    guard = next(c for c in trainer.callback_handler.callbacks
                 if isinstance(c, StopOnNonFiniteLoss))
    try:
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(
            Path(trainer.args.output_dir)))
        if guard.reason:
            context.prune(guard.reason, step=trainer.state.global_step)
        else:
            for callback in (ReportEvaluations, EarlyStoppingCallback):
                trainer.remove_callback(callback)
            finish(trainer)
    finally:
        if hasattr(model, "unload"):  # a LoRA adapter comes off the kept base
            model.unload()
        del trainer
        settle()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def best_step(trainer: Trainer) -> int | None:
    best = trainer.state.best_model_checkpoint
    return int(Path(best).name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")) if best else None


def logged_evaluation(trainer: Trainer, step: int | None) -> dict[str, Any]:
    """The figures of the validation evaluation at ``step`` as the Trainer logged them."""
    return dict(next((entry for entry in trainer.state.log_history
                      if entry.get("step") == step and "eval_runtime" in entry), {}))
