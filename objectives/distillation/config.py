"""The distillation objective's sections of a space: teacher, student, distill, data,
training, early_stopping. Field names follow Hugging Face (its model configs, TrainingArguments).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from objectives.sections import EarlyStoppingSection, Section
from objectives.sequence_classification_lora.config import ClassificationTraining, LabelledData


class TeacherSection(Section):
    model: str = Field(
        "classify", description="The trained classifier to distil: a study name (its best "
        "trial), STUDY:TRIAL, a trial folder of the classification objective, or a folder "
        "AutoModelForSequenceClassification loads (an export).")
    logits: Literal["auto", "cached", "on_the_fly"] = Field(
        "auto", description="cached: the teacher's logits on the training split are computed "
        "once per study and read by every trial; on_the_fly: the teacher runs beside the "
        "student at each step (for data whose logits do not fit); auto: cached when they take "
        "at most max_cached_mb.")
    max_cached_mb: float = Field(256, gt=0)


class StudentSection(Section):
    """A smaller model of the teacher's architecture: each size left out is the teacher's.
    Its layers start as a copy of the teacher's layers (spread evenly over its depth), each
    weight sliced to the student's size where it is smaller; then, with prune_ratio, its
    least important heads and FFN neurons are removed (objectives.distillation.pruning)."""

    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int | None = Field(None, gt=0, description="Must divide hidden_size.")
    hidden_size: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    prune_ratio: float = Field(
        0.0, ge=0, lt=1, description="Structured pruning: this share of every layer's "
        "attention heads and FFN neurons, the least important first, is removed from the "
        "student before it trains (with heads, hidden and intermediate size the teacher's).")


class DistillSection(Section):
    temperature: float = Field(2.0, gt=0, description="T: both distributions are softened by "
                               "it, and the KL term scaled by T^2 (Hinton et al., 2015).")
    alpha: float = Field(0.5, ge=0, le=1, description="Share of the loss that is the KL "
                         "divergence from the teacher; the rest is the task's cross-entropy.")
    quality_metric: Literal["macro_f1", "accuracy"] = Field(
        "macro_f1", description="What quality_retained divides: the student's figure by the "
        "teacher's, on the same split.")


class DistillationConfig(Section):
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    student: StudentSection = Field(default_factory=StudentSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    data: LabelledData = Field(default_factory=LabelledData)
    training: ClassificationTraining = Field(default_factory=ClassificationTraining)
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection)

    path_fields: ClassVar[dict[str, list[str]]] = {
        "data": ["path", "validation_path", "test_path"], "teacher": ["model"]}
    trial_fields: ClassVar[dict[str, list[str]]] = {"teacher": ["model"]}
