"""Config sections and model lookup shared by the Hugging Face objectives.

Field names follow Hugging Face (TrainingArguments, LoraConfig), so a value means what it
means there. An objective's config combines these with sections of its own.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from objectives.base import DataError

PACKAGE_PREFIX = "package:"  # package:NAME, a model folder shipped inside a Python package


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainingSection(Section):
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
    learning_rate_scale: float | None = Field(
        None, gt=0, description="With model.adapter naming a trial: the learning rate is this "
        "times that trial's (0.3: an update at 30 % of the first run's rate).")

    @model_validator(mode="after")
    def _save_on_evals(self) -> TrainingSection:
        if self.save_steps is not None and self.save_steps % self.eval_steps:
            raise ValueError(f"save_steps ({self.save_steps}) must be a multiple of eval_steps "
                             f"({self.eval_steps}) so the best evaluation has a checkpoint")
        return self


class ModelBase(Section):
    """What the LoRA objectives' model sections share."""

    adapter: str | None = Field(
        None, description="Continue this LoRA adapter in every trial instead of a fresh one: "
        "a study (its best trial's), STUDY:TRIAL, a trial folder or an adapter folder. Its "
        "shape (the lora section) is the adapter's.")


class LoraSection(Section):
    r: int = Field(8, gt=0, description="Adapter rank: higher fits more, costs more memory.")
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (a list or one name), or 'all-linear'.")
    bias: Literal["none", "all", "lora_only"] = "none"


class EarlyStoppingSection(Section):
    patience: int = Field(3, gt=0, description="Evaluations without improvement before stop.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as better.")


def module_names(lora: LoraSection) -> list[str] | str:
    """peft reads a lone string as a regular expression over full module paths; here it is one
    module name, like each item of a list."""
    modules = lora.target_modules
    return [modules] if isinstance(modules, str) and modules != "all-linear" else modules


def local_model(name: str) -> Path:
    """A model folder: a path, ``package:NAME`` (the folder an installed package ships), or a
    hub id already in the local Hugging Face cache (its snapshot folder). Nothing is
    downloaded during a search: a trial must not wait on the network, and every trial must
    load the same weights."""
    if name.startswith(PACKAGE_PREFIX):
        return package_model(name.removeprefix(PACKAGE_PREFIX))
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


def package_model(module: str) -> Path:
    """The model folder an installed package ships: its ``get_model_path()``, else its
    ``model/`` folder."""
    field = "model.name_or_path"
    try:
        package = importlib.import_module(module)
    except ImportError:
        pip_name = module.replace("_", "-")
        raise DataError(field, f"{PACKAGE_PREFIX}{module}: the package is not installed "
                        f"(pip install {pip_name})") from None
    getter = getattr(package, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(package.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise DataError(field, f"{PACKAGE_PREFIX}{module}: the package holds no model folder "
                        f"({path} has no config.json)")
    return path
