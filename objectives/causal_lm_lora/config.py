"""The LoRA causal-LM objective's sections of a space: model, data, training, lora,
evaluation, early_stopping. Field names follow Hugging Face (TrainingArguments, LoraConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from objectives.data.replay import Replayable
from objectives.data.section import ChunkSection, DataFiles
from objectives.sections import (
    EarlyStoppingSection,
    LoraSection,
    ModelBase,
    Section,
    TrainingSection,
    local_model,
)

BUILTIN = "builtin:tiny-llama"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "finance_sentiment.jsonl"
LAYER_PROFILE = "layer_profile.jsonl"  # a profiled trial's per-layer records, in its folder


class ModelSection(ModelBase):
    name_or_path: str = Field(
        BUILTIN,
        description="Local folder or hub id for from_pretrained; builtin:tiny-llama is the "
        "embedded default.",
    )
    config_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Model-config keys changed before loading, e.g. num_attention_heads.",
    )


class DataSection(DataFiles, Replayable):
    """Instruction records (instruction / input / output) or chat ``messages``; with
    ``columns`` the fields may have other names in the file."""

    path: str = Field(str(DEFAULT_DATA), description="JSONL, CSV or Parquet instruction or "
                      "chat data, or a folder of such files.")
    max_length: int = Field(256, gt=8, description="Tokens per example; longer prompts are "
                            "cut from the start.")
    chunk: ChunkSection | None = Field(
        None, description="Long documents (.txt / .md files, or a text column) cut into "
        "token windows for continued pretraining, instead of instruction records.")

    @model_validator(mode="after")
    def _no_augmenting_documents(self) -> DataSection:
        if self.chunk is not None and self.augment.p > 0:
            raise ValueError("augment is for instruction records, not data.chunk documents")
        if self.chunk is not None and self.replay is not None:
            raise ValueError("replay is for instruction records, not data.chunk documents")
        return self


class EvaluationSection(Section):
    """Task metrics from greedy answers to the prompts of a split (accuracy, macro-F1, BLEU,
    ROUGE-L); the loss needs no generation."""

    max_new_tokens: int | None = Field(
        None, gt=0, description="Longest generated answer, in tokens; default: the longest "
        "training answer's (with its end-of-turn token).")
    max_eval_examples: int | None = Field(
        None, gt=0, description="Validation examples the evaluations during training answer "
        "(the first N of the split; default all). The final evaluation, and the first at or "
        "after each step where the scheduler compares trials, answer them all.")
    labels: list[str] | None = Field(
        None, min_length=2, description="The closed set of answers (for macro-F1); default: "
        "found from the training answers when they are a few short labels.")


class CausalLMConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)

    path_fields: ClassVar[dict[str, list[str]]] = {
        "data": ["path", "validation_path", "test_path", "replay.path"],
        "model": ["name_or_path", "adapter"]}
    trial_fields: ClassVar[dict[str, list[str]]] = {"model": ["adapter"],
                                                    "data": ["replay.path"]}


def model_path(config: CausalLMConfig) -> str:
    """The folder to load the model from; the embedded default is built on first use."""
    if config.model.name_or_path == BUILTIN:
        from objectives.causal_lm_lora import tiny_llama

        return str(tiny_llama.ensure_builtin())
    return str(local_model(config.model.name_or_path))


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


def reference_model(config: CausalLMConfig) -> str | None:
    """The model the perplexity filter scores with (data.clean.perplexity_model, else the
    base model); None when the filter is off."""
    clean = config.data.clean
    if clean.max_perplexity is None:
        return None
    name = clean.perplexity_model or config.model.name_or_path
    return model_path(CausalLMConfig(model=ModelSection(name_or_path=name)))
