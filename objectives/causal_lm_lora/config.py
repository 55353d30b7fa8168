"""The LoRA causal-LM objective's sections of a space: model, data, training, lora,
evaluation, early_stopping. Field names follow Hugging Face (TrainingArguments, LoraConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from objectives.base import DataError

BUILTIN = "builtin:tiny-llama"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "finance_sentiment.jsonl"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSection(_Section):
    name_or_path: str = Field(
        BUILTIN,
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


class EvaluationSection(_Section):
    """Task metrics from greedy answers to the prompts of a split (accuracy, macro-F1, BLEU,
    ROUGE-L); the loss needs no generation."""

    max_new_tokens: int | None = Field(
        None, gt=0, description="Longest generated answer, in tokens; default: the longest "
        "training answer's (with its end-of-turn token).")
    max_eval_examples: int | None = Field(
        None, gt=0, description="Validation examples the evaluations during training answer "
        "(the first N of the split; default all). The final evaluation answers them all.")
    labels: list[str] | None = Field(
        None, min_length=2, description="The closed set of answers (for macro-F1); default: "
        "found from the training answers when they are a few short labels.")


class EarlyStoppingSection(_Section):
    patience: int = Field(3, gt=0, description="Evaluations without improvement before stop.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as better.")


class CausalLMConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)

    path_fields: ClassVar[dict[str, list[str]]] = {"data": ["path"], "model": ["name_or_path"]}


def module_names(lora: LoraSection) -> list[str] | str:
    """peft reads a lone string as a regular expression over full module paths; here it is one
    module name, like each item of a list."""
    modules = lora.target_modules
    return [modules] if isinstance(modules, str) and modules != "all-linear" else modules


def model_path(config: CausalLMConfig) -> str:
    """The folder to load the model from; the embedded default is built on first use."""
    if config.model.name_or_path == BUILTIN:
        from objectives.causal_lm_lora import tiny_llama

        return str(tiny_llama.ensure_builtin())
    return str(local_model(config.model.name_or_path))


def local_model(name: str) -> Path:
    """A model folder, or a hub id already in the local Hugging Face cache (its snapshot
    folder). Nothing is downloaded during a search: a trial must not wait on the network, and
    every trial must load the same weights."""
    field = "model.name_or_path"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError(field, f"{name}: not a model folder (it holds no config.json)")
        return path.resolve()
    if path.exists():
        raise DataError(field, f"{name} is a file; name the model's folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError, OSError, ValueError):
        raise DataError(field, f"no such folder, and no hub model {name!r} in the local Hugging "
                        "Face cache: download it first (hf download NAME) or name a folder") \
            from None


def model_config(config: CausalLMConfig, path: str):
    """The base model's config with the overrides applied.

    Changing the number of attention heads keeps every weight's shape as long as hidden_size
    does not change: only the per-head split (head_dim) moves.
    """
    from transformers import AutoConfig

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
