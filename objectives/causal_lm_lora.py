"""Recipe: LoRA supervised fine-tuning of a causal language model, one trial top to bottom.

load prepared data -> load base model (config overrides applied) -> attach LoRA -> train with
transformers' Trainer (warmup schedule, accumulation, mixed precision, checkpoints, early
stopping) reporting each evaluation to the search -> evaluate the best checkpoint -> save the
adapter. A restarted trial resumes from its last checkpoint.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from peft import LoraConfig, get_peft_model
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import (
    AutoConfig,
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
from transformers.trainer_utils import sort_checkpoints

from objectives import sft_data, tiny_llama
from objectives.base import Objective, TrialContext, finite
from objectives.layer_profile import LAYER_PROFILE, profile_layers

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "finance_sentiment.jsonl"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Section):
    name_or_path: str = Field(
        tiny_llama.BUILTIN,
        description="Local folder or hub id for from_pretrained; builtin:tiny-llama is the "
        "embedded default.",
    )
    config_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Model-config keys changed before loading, e.g. num_attention_heads.",
    )


class DataSection(_Section):
    path: str = Field(str(DEFAULT_DATA), description="JSONL instruction or chat data.")
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    max_length: int = Field(256, gt=8, description="Tokens per example; longer prompts are "
                            "cut from the start.")
    seed: int = 0


class TrainingSection(_Section):
    """Hugging Face TrainingArguments names, so the values mean what they mean there."""

    learning_rate: float = Field(5e-5, gt=0)
    per_device_train_batch_size: int = Field(8, gt=0)
    per_device_eval_batch_size: int = Field(32, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="When > 0, overrides num_train_epochs.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
        "constant_with_warmup",
    ] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_steps: int = Field(50, gt=0, description="Evaluate (and report to the scheduler) "
                            "every N optimizer steps.")
    save_steps: int | None = Field(None, gt=0, description="Checkpoint every N steps; a "
                                   "multiple of eval_steps; defaults to eval_steps.")
    save_total_limit: int = Field(2, gt=0)
    logging_steps: int = Field(10, gt=0)
    gradient_checkpointing: bool = Field(False, description="Less memory, ~30% slower.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 with dynamic loss "
        "scaling; fp32 on CPU.")
    seed: int = 42

    @model_validator(mode="after")
    def _save_on_evals(self) -> TrainingSection:
        if self.save_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of eval_steps "
                             f"({self.eval_steps}) so the best evaluation has a checkpoint")
        return self


class LoraSection(_Section):
    r: int = Field(8, gt=0, description="Adapter rank: higher fits more, costs more memory.")
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (a list or one name), or 'all-linear'.")
    bias: Literal["none", "all", "lora_only"] = "none"


def _module_names(lora: LoraSection) -> list[str] | str:
    # peft reads a lone string as a regular expression over full module paths; here it is one
    # module name, like each item of a list.
    modules = lora.target_modules
    return [modules] if isinstance(modules, str) and modules != "all-linear" else modules


class EarlyStoppingSection(_Section):
    patience: int = Field(3, gt=0, description="Evaluations without improvement before stop.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as better.")


class CausalLMConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)

    # Relative paths here are looked up beside the space file first.
    path_fields: ClassVar[dict[str, list[str]]] = {"data": ["path"], "model": ["name_or_path"]}


def model_path(config: CausalLMConfig) -> str:
    """The folder or hub id to load; the embedded default is built on first use."""
    if config.model.name_or_path == tiny_llama.BUILTIN:
        return str(tiny_llama.ensure_builtin())
    return config.model.name_or_path


def model_config(config: CausalLMConfig, path: str):
    """The base model's config with the overrides applied.

    Changing the number of attention heads keeps every weight's shape as long as hidden_size
    does not change: only the per-head split (head_dim) moves.
    """
    base = AutoConfig.from_pretrained(path)
    overrides = dict(config.model.config_overrides)
    heads = overrides.get("num_attention_heads")
    if heads is not None:
        hidden = overrides.get("hidden_size", base.hidden_size)
        if not isinstance(heads, int) or heads <= 0 or hidden % heads:
            raise ValueError(f"num_attention_heads={heads} does not divide hidden_size={hidden}")
        overrides.setdefault("head_dim", hidden // heads)
        if getattr(base, "num_key_value_heads", None) == base.num_attention_heads:
            overrides.setdefault("num_key_value_heads", heads)  # stays multi-head attention
    for key in overrides:
        if not hasattr(base, key):
            raise ValueError(f"model config has no key {key!r}")
    base.update(overrides)
    return base


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
        self.context.report({
            "step": state.global_step,
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "train_loss": _last_train_loss(state),
        })


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


class CausalLMLoRA(Objective):
    name = "causal_lm_lora"
    config_model = CausalLMConfig

    def check(self, config: CausalLMConfig) -> None:
        model_config(config, model_path(config))

    def oom_retry(self, config: CausalLMConfig) -> dict[str, Any] | None:
        """Half the per-device batch, twice the accumulation: the same effective batch."""
        batch = config.training.per_device_train_batch_size
        if batch < 2:
            return None
        return {
            "training.per_device_train_batch_size": batch // 2,
            "training.gradient_accumulation_steps": config.training.gradient_accumulation_steps * 2,
        }

    def check_data(self, config: CausalLMConfig) -> None:
        data = config.data
        sft_data.split_examples(sft_data.read_examples(Path(data.path)), data.validation_fraction,
                                data.test_fraction, data.seed, Path(data.path))

    def prepare(self, config: CausalLMConfig, prepared_dir: Path) -> None:
        self._tokenized(config, prepared_dir)

    def _tokenized(self, config: CausalLMConfig, prepared_dir: Path) -> tuple[Path, Any]:
        path = model_path(config)
        tokenizer = AutoTokenizer.from_pretrained(path)
        settings = config.data.model_dump(exclude={"path"})
        prepared = sft_data.prepare(Path(config.data.path), tokenizer, Path(path), settings,
                                    prepared_dir)
        return prepared, tokenizer

    def run(self, config: CausalLMConfig, context: TrialContext) -> None:
        train_cfg = config.training
        torch.set_num_threads(context.threads)
        prepared, tokenizer = self._tokenized(config, context.prepared_dir)
        base = load_base_model(config)
        set_seed(train_cfg.seed)  # after loading, so a reused base gives the same adapter init
        try:
            model = get_peft_model(base, LoraConfig(
                task_type="CAUSAL_LM", r=config.lora.r, lora_alpha=config.lora.lora_alpha,
                lora_dropout=config.lora.lora_dropout, target_modules=_module_names(config.lora),
                bias=config.lora.bias,
            ))
        except Exception:
            _BASE_MODELS.clear()  # it may be half-changed: the next trial loads it afresh
            raise

        cuda = torch.cuda.is_available()
        checkpoints = context.trial_dir / "checkpoints"
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
            metric_for_best_model="eval_loss",
            greater_is_better=False,
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
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=sft_data.load_split(prepared, "train"),
            eval_dataset=sft_data.load_split(prepared, "validation"),
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                 label_pad_token_id=sft_data.IGNORE_INDEX),
            callbacks=[
                _ReportEvaluations(context),
                guard,
                EarlyStoppingCallback(config.early_stopping.patience,
                                      config.early_stopping.min_delta),
            ],
        )
        trainer.remove_callback(PrinterCallback)  # evaluations go to the search, not stdout
        try:
            trainer.train(resume_from_checkpoint=last_complete_checkpoint(checkpoints))
            if guard.reason:
                context.report({"step": trainer.state.global_step, "eval_loss": float("nan"),
                                "outcome": "pruned", "reason": guard.reason})
            else:
                self._finish(trainer, prepared, tokenizer, context)
        finally:
            # Take the adapter off the base (kept for the worker's next trial) and free what
            # the trial held, also when the scheduler stops it mid-run.
            model.unload()
            del trainer, model
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()

    @staticmethod
    def _finish(trainer: Trainer, prepared: Path, tokenizer, context: TrialContext) -> None:
        """Evaluate the best checkpoint (loaded back by the Trainer) on the test split, save
        its adapter, and send the last report: its validation loss is the trial's value."""
        for callback in (_ReportEvaluations, EarlyStoppingCallback):
            trainer.remove_callback(callback)
        # The best checkpoint's validation loss was measured when it was saved.
        best = trainer.state.best_metric
        if best is None:  # no evaluation during training (max_steps below eval_steps)
            best = trainer.evaluate()["eval_loss"]
        # Per-layer time, memory and activations of the final model, charted by the report.
        profile = context.trial_dir / LAYER_PROFILE
        profile.unlink(missing_ok=True)  # a restarted trial's final evaluation starts afresh
        with profile_layers(trainer.model, profile):
            test = trainer.evaluate(sft_data.load_split(prepared, "test"),
                                    metric_key_prefix="test")
        trainer.model.save_pretrained(context.trial_dir / "adapter")
        tokenizer.save_pretrained(context.trial_dir / "adapter")
        context.report({
            "step": trainer.state.global_step,
            "eval_loss": best,
            "perplexity": math.exp(min(best, 50.0)),
            "test_loss": test["test_loss"],
            "outcome": "complete",
        })

    def save_best(self, trial_dir: Path, best_dir: Path) -> None:
        # Copied aside, then swapped in: launchers sharing a study may both finish at once.
        staged = best_dir.with_name(f".{best_dir.name}.{uuid.uuid4().hex}")
        shutil.copytree(trial_dir / "adapter", staged)
        shutil.copy2(trial_dir / "config.yaml", staged / "config.yaml")
        shutil.rmtree(best_dir, ignore_errors=True)
        try:
            staged.rename(best_dir)
        except OSError:  # the other launcher's copy of the same best trial got there first
            shutil.rmtree(staged)
